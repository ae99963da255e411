//! The hardened systemd units in `deploy/systemd/`: systemd's own checker accepts them, and
//! systemd's security analysis rates each at most 2.0 of 10 (lower is safer; a unit without
//! sandboxing is about 9.6). Needs `systemd-analyze` (Debian's systemd package): required in
//! CI, skipped with a notice elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use shopfloor_tests::repo_root;

const ANALYZE: &str = "systemd-analyze";
/// Highest accepted exposure, in systemd's tenths (20 = 2.0).
const MAX_EXPOSURE: &str = "20";

fn available() -> bool {
    let ok = Command::new(ANALYZE)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "{ANALYZE} is required in CI (apt-get install systemd)"
        );
        eprintln!("skipped: the systemd unit checks need {ANALYZE}");
    }
    ok
}

/// The unit with its binary path replaced by one that exists here (`verify` checks it).
fn unit_copy(dir: &Path, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(repo_root().join("deploy/systemd").join(name)).unwrap();
    assert!(
        text.contains("/usr/local/bin/shopfloor-"),
        "{name}: ExecStart"
    );
    let text = text
        .replace("/usr/local/bin/shopfloor-gateway", "/bin/true")
        .replace("/usr/local/bin/shopfloor-agent", "/bin/true");
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn units_verify_and_are_sandboxed() {
    if !available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sf-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["shopfloor-gateway.service", "shopfloor-agent.service"] {
        let unit = unit_copy(&dir, name);
        let out = Command::new(ANALYZE)
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(ANALYZE)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={MAX_EXPOSURE}"))
            .arg(&unit)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let summary = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or("no summary");
        eprintln!("{summary}");
        assert!(
            out.status.success(),
            "{name}: above {MAX_EXPOSURE}: {summary}"
        );
        // The same analysis fails an unsandboxed unit, so the check can fail.
        let bare = dir.join(format!("bare-{name}"));
        std::fs::write(&bare, "[Service]\nExecStart=/bin/true\n").unwrap();
        let out = Command::new(ANALYZE)
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(format!("--threshold={MAX_EXPOSURE}"))
            .arg(&bare)
            .output()
            .unwrap();
        assert!(!out.status.success(), "a bare unit passed the threshold");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
