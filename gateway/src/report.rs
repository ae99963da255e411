//! Auditor reports: an enterprise (or workshop, park) period report as printable HTML, XLSX,
//! CSV, or the evidence JSON (`shopfloor-gateway report`, `GET /api/v1/reports`;
//! docs/REPORTS.md).
//!
//! - [`doc`]: the report's content, built once from the evidence, the engine's report on it
//!   (the numbers of `GET /api/v1/indicators`), the economic input history and its audit trail;
//! - [`verify`]: re-verification of the stored raw batches the evidence cites (signatures with
//!   the registered keys, hash chain), with ingest's own checks;
//! - `html`, `sheet`, `table`: the three renderings of one [`doc::Doc`].
//!
//! Invariants:
//! - every number comes from `shopfloor_core::compute` on the evidence `GET /api/v1/evidence`
//!   serves for the same entity and period (through `indicators::report_json`, the API's own
//!   function); coefficients are the engine's (`coefficients::resolve`), never written here;
//! - `json` is byte for byte the document `GET /api/v1/evidence` returns;
//! - a report never writes to the store; bad input is [`QueryError::Bad`] naming the field.

pub(crate) mod doc;
mod html;
mod sheet;
mod table;
mod text;
pub mod verify;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::tz::TimeZone;
use shopfloor_core::path::Level;
use shopfloor_store::{Ms, StoreError};

use crate::db::Db;
use crate::evidence as ev;
use crate::indicators::{self, QueryError};
use crate::model::Snapshot;

/// Output format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Xlsx,
    Csv,
    /// The evidence file (`shopfloor.evidence/1`) the report's numbers come from.
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "html" => Some(Format::Html),
            "xlsx" => Some(Format::Xlsx),
            "csv" => Some(Format::Csv),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Xlsx => "xlsx",
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Html => "text/html; charset=utf-8",
            Format::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
        }
    }
}

/// Language of a report's labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    ZhCn,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "zh-CN" | "zh" => Some(Lang::ZhCn),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::ZhCn => "zh-CN",
            Lang::En => "en",
        }
    }

    /// The Chinese or the English text.
    pub(crate) fn t<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::ZhCn => zh,
            Lang::En => en,
        }
    }
}

/// The outcome of the signature verification behind a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every cited batch verified (signature, body hash, chain).
    Pass,
    /// At least one problem; the report lists each.
    Fail,
    /// Not run (the `json` format through the API: the evidence file alone).
    NotChecked,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::NotChecked => "NOT CHECKED",
        }
    }
}

/// A rendered report.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub content_type: &'static str,
    /// Suggested file name (`report-<entity>-<from>-<to>.<ext>`, ASCII only).
    pub file_name: String,
    pub bytes: Vec<u8>,
    /// The signature verification result shown in the report.
    pub verdict: Verdict,
    /// Agents and stored batches checked.
    pub agents_checked: usize,
    pub batches_checked: u64,
}

/// The levels a report is made for.
fn report_level(snap: &Snapshot, entity: &str) -> Result<Level, QueryError> {
    ev::lookup(snap, entity)?;
    let level = ev::level(entity).ok_or_else(|| QueryError::Bad {
        field: "entity".into(),
        reason: format!("{entity} is not an entity path"),
    })?;
    match level {
        Level::Park | Level::Enterprise | Level::Workshop => Ok(level),
        Level::Line | Level::Equipment => Err(QueryError::Bad {
            field: "entity".into(),
            reason: format!(
                "{entity} is a {}; reports are made for enterprises, workshops and parks \
                 (GET /api/v1/indicators and /api/v1/evidence serve lines and equipment)",
                level.as_str()
            ),
        }),
    }
}

fn stamp(ms: Ms) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y%m%dT%H%M%SZ").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn file_name(entity: &str, from: Ms, to: Ms, format: Format) -> String {
    format!(
        "report-{}-{}-{}.{}",
        entity.replace('/', "_"),
        stamp(from),
        stamp(to),
        format.extension()
    )
}

fn internal(what: &str, e: impl std::fmt::Display) -> QueryError {
    QueryError::Store(StoreError::Db(format!("report: {what}: {e}")))
}

/// Builds the report of `entity` over `[from, to)`. The `json` format is the evidence document
/// exactly as `GET /api/v1/evidence` serves it (no signature check); the other formats re-verify
/// the cited batches.
#[allow(clippy::too_many_arguments)]
pub async fn render(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
    format: Format,
    lang: Lang,
) -> Result<Rendered, QueryError> {
    build(
        db,
        snap,
        tz,
        entity,
        from,
        to,
        format,
        lang,
        format != Format::Json,
    )
    .await
}

/// [`render`], choosing whether the signatures are verified (the command line always does).
#[allow(clippy::too_many_arguments)]
pub async fn build(
    db: &Db,
    snap: &Snapshot,
    tz: &TimeZone,
    entity: &str,
    from: Ms,
    to: Ms,
    format: Format,
    lang: Lang,
    check_signatures: bool,
) -> Result<Rendered, QueryError> {
    let level = report_level(snap, entity)?;
    let evidence = ev::build(db, snap, tz, entity, from, to).await?;
    // The very bytes `GET /api/v1/evidence` answers with.
    let evidence_bytes =
        serde_json::to_vec_pretty(&evidence).map_err(|e| internal("evidence", e))?;
    let verification = if check_signatures {
        Some(verify::verify(db, snap, &evidence).await?)
    } else {
        None
    };
    let (verdict, agents_checked, batches_checked) = match &verification {
        None => (Verdict::NotChecked, 0, 0),
        Some(v) => (
            if v.passed() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            v.agents.len(),
            v.agents.iter().map(|a| a.checked).sum(),
        ),
    };
    let bytes = if format == Format::Json {
        evidence_bytes
    } else {
        let report = indicators::compute(&evidence)?;
        let api = indicators::report_json(snap, tz, entity, from, to, &report);
        let d = doc::build(
            db,
            snap,
            tz,
            doc::Sources {
                entity,
                level,
                from,
                to,
                lang,
                evidence: &evidence,
                evidence_bytes: &evidence_bytes,
                report: &report,
                api: &api,
                verification,
            },
        )
        .await?;
        match format {
            Format::Html => html::render(&d).into_bytes(),
            Format::Xlsx => sheet::render(&d).map_err(|e| internal("xlsx", e))?,
            Format::Csv | Format::Json => table::render(&d).map_err(|e| internal("csv", e))?,
        }
    };
    Ok(Rendered {
        content_type: format.content_type(),
        file_name: file_name(entity, from, to, format),
        bytes,
        verdict,
        agents_checked,
        batches_checked,
    })
}

// ---------------------------------------------------------------------------------------------
// The command line.

/// Environment variable naming the configuration file when `--config` is not given.
pub const CONFIG_ENV: &str = "SHOPFLOOR_GATEWAY_CONFIG";

/// `shopfloor-gateway report`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 written, signatures PASS; 1 written but signature verification \
                  FAIL (the report lists each failure), or a runtime failure (store, file); \
                  2 bad arguments or configuration (`field: reason`). docs/REPORTS.md"
)]
pub struct Args {
    /// Gateway configuration file. Default: $SHOPFLOOR_GATEWAY_CONFIG, else ./gateway.toml.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Entity path of an enterprise, workshop or park (p1/e1).
    #[arg(long, value_name = "ID")]
    pub entity: String,
    /// Start: RFC 3339 with offset, or a date YYYY-MM-DD (local midnight in gateway.time_zone).
    #[arg(long, value_name = "T")]
    pub from: String,
    /// End (exclusive), like --from.
    #[arg(long, value_name = "T")]
    pub to: String,
    /// html (printable A4), xlsx, csv (UTF-8 with BOM) or json (the evidence file).
    #[arg(long, value_name = "FORMAT")]
    pub format: String,
    /// Labels: zh-CN (default) or en.
    #[arg(long, value_name = "LANG", default_value = "zh-CN")]
    pub lang: String,
    /// Where to write the report (written to a temporary file beside it, then renamed).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub(crate) fn config_path(arg: Option<&Path>) -> PathBuf {
    match arg {
        Some(p) => p.to_owned(),
        None => std::env::var_os(CONFIG_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from("gateway.toml"), PathBuf::from),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| std::io::Error::other("not a file name"))?;
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `shopfloor-gateway report ...`: exit 0 (PASS), 1 (signature FAIL, report written; or a
/// runtime failure), 2 (bad arguments or configuration).
pub fn run(args: &Args) -> ExitCode {
    let Some(format) = Format::parse(&args.format) else {
        eprintln!(
            "error: format: {:?} is not one of html, xlsx, csv, json",
            args.format
        );
        return ExitCode::from(2);
    };
    let Some(lang) = Lang::parse(&args.lang) else {
        eprintln!("error: lang: {:?} is not zh-CN or en", args.lang);
        return ExitCode::from(2);
    };
    if args.out.file_name().is_none() {
        eprintln!("error: out: {} is not a file path", args.out.display());
        return ExitCode::from(2);
    }
    let path = config_path(args.config.as_deref());
    let cfg = match crate::cli::config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let tz = match crate::cli::time_zone(&path, &cfg) {
        Ok(tz) => tz,
        Err(code) => return code,
    };
    let period = indicators::parse_time("from", &args.from, &tz).and_then(|from| {
        let to = indicators::parse_time("to", &args.to, &tz)?;
        ev::check_period(from, to)?;
        Ok((from, to))
    });
    let (from, to) = match period {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(reason) = crate::registry::check_entity_path(&args.entity) {
        eprintln!("error: entity: {reason}");
        return ExitCode::from(2);
    }
    let rt = match crate::cli::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let rendered = rt.block_on(async {
        let (db, snap) = crate::cli::stored_registry(&cfg).await?;
        Ok::<_, String>(build(&db, &snap, &tz, &args.entity, from, to, format, lang, true).await)
    });
    let rendered = match rendered {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return crate::cli::query_failed(e, &args.entity),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = write_atomically(&args.out, &rendered.bytes) {
        eprintln!("error: out: {}: {e}", args.out.display());
        return ExitCode::from(1);
    }
    eprintln!(
        "{}: {} bytes; signatures: {} ({} agents, {} batches checked)",
        args.out.display(),
        rendered.bytes.len(),
        rendered.verdict.as_str(),
        rendered.agents_checked,
        rendered.batches_checked
    );
    match rendered.verdict {
        Verdict::Fail => ExitCode::from(1),
        Verdict::Pass | Verdict::NotChecked => ExitCode::SUCCESS,
    }
}
