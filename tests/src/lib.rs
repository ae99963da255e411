//! Helpers shared by the cross-crate tests: locating the repository's data files and reading
//! the expected values documented beside the worked evidence files.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub mod browser;
pub mod pki;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Expected indicator values per evidence file, parsed from `configs/evidence/README.md`:
/// a `### <file>.json` heading followed by a `| indicator | expected |` table.
pub fn expected_values(
    readme: &str,
) -> Result<BTreeMap<String, BTreeMap<String, Option<f64>>>, String> {
    let mut out: BTreeMap<String, BTreeMap<String, Option<f64>>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in readme.lines().enumerate() {
        let line = line.trim();
        if let Some(h) = line.strip_prefix("### ") {
            let h = h.trim().trim_matches('`');
            current = h.ends_with(".json").then(|| h.to_owned());
            continue;
        }
        let Some(file) = &current else { continue };
        if !line.starts_with('|') {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 2 || cells[0] == "indicator" || cells[0].starts_with("---") {
            continue;
        }
        let id = cells[0].trim_matches('`').to_owned();
        let v = match cells[1] {
            "null" => None,
            s => Some(
                s.replace(['_', ','], "")
                    .parse::<f64>()
                    .map_err(|e| format!("README line {}: {s}: {e}", n + 1))?,
            ),
        };
        if out
            .entry(file.clone())
            .or_default()
            .insert(id.clone(), v)
            .is_some()
        {
            return Err(format!(
                "README line {}: {id} listed twice for {file}",
                n + 1
            ));
        }
    }
    Ok(out)
}

/// Relative closeness for documented decimals (the README gives ≥ 10 significant digits).
pub fn close(a: f64, b: f64) -> bool {
    let scale = a.abs().max(b.abs()).max(1e-12);
    (a - b).abs() / scale < 1e-9
}
