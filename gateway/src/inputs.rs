//! Economic inputs (value added, output, employees, land, solid waste, unmetered water) of an
//! enterprise or workshop for a period: `POST /api/v1/inputs` (JSON) and imports of CSV and
//! XLSX files, stored as versioned, audited records (`shopfloor_store::InputsRecord`).
//!
//! Invariants:
//! - Every record is validated before it is stored: the entity is a registered enterprise or
//!   workshop (a park's figures are the sums of its enterprises', and lines, equipment and
//!   meters have no accounts), `from`/`to` are RFC 3339 times with an offset, `from < to`, the
//!   period is at most 3 653 days, every value is finite and ≥ 0, waste utilised ≤ waste
//!   generated, and at least one value is given.
//! - A submission (a JSON array, a file) is validated as a whole before anything is stored:
//!   one bad row, or two rows for the same entity and period, and nothing is written.
//! - The stored `doc` is the [`EconomicInputs`] document as submitted (validated), so it reads
//!   back as that type; each stored version is audited by the store with its source (`api`,
//!   `csv:<name>`, `xlsx:<name>`).
//! - Import errors read `file: row N: column: reason`, where row 1 is the header row (as a
//!   spreadsheet numbers it); parsing never panics on any bytes.

use std::collections::BTreeMap;
use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use serde_json::Value;
use shopfloor_core::evidence::MAX_PERIOD_DAYS;
use shopfloor_store::{InputsRecord, Ms, Store, StoreError};

use crate::db::Db;
use crate::model::{EconomicInputs, EntityKind, Snapshot};
use crate::registry::{check_entity_path, entity_kind_name};

/// The columns of an import file = the fields of [`EconomicInputs`].
pub const COLUMNS: [&str; 10] = [
    "entity",
    "from",
    "to",
    "value_added_cny",
    "gross_output_cny",
    "employees_avg",
    "land_area_m2",
    "solid_waste_generated_t",
    "solid_waste_utilized_t",
    "unmetered_water_m3",
];

/// At most this many data rows per import.
pub const MAX_ROWS: usize = 10_000;
/// At most this many problems are reported per submission (the first ones).
const MAX_ERRORS: usize = 50;

/// Where a submitted record sits, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    /// The whole JSON body: `field: reason`.
    Body,
    /// Element `i` of a JSON array: `[i].field: reason`.
    Index(usize),
    /// Row `row` of an import file (the header is row 1): `file: row N: column: reason`.
    Row { file: String, row: usize },
}

impl Loc {
    fn message(&self, field: &str, reason: &str) -> String {
        match (self, field.is_empty()) {
            (Loc::Body, true) => format!("body: {reason}"),
            (Loc::Body, false) => format!("{field}: {reason}"),
            (Loc::Index(i), true) => format!("[{i}]: {reason}"),
            (Loc::Index(i), false) => format!("[{i}].{field}: {reason}"),
            (Loc::Row { file, row }, true) => format!("{file}: row {row}: {reason}"),
            (Loc::Row { file, row }, false) => format!("{file}: row {row}: {field}: {reason}"),
        }
    }

    fn short(&self) -> String {
        match self {
            Loc::Body => "the body".into(),
            Loc::Index(i) => format!("[{i}]"),
            Loc::Row { row, .. } => format!("row {row}"),
        }
    }
}

/// A validated record, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Valid {
    pub entity: String,
    pub from: Ms,
    pub to: Ms,
    pub doc: Value,
}

/// Why a submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    /// Messages located by [`Loc`]; nothing was stored.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn values(i: &EconomicInputs) -> [(&'static str, Option<f64>); 7] {
    [
        ("value_added_cny", i.value_added_cny),
        ("gross_output_cny", i.gross_output_cny),
        ("employees_avg", i.employees_avg),
        ("land_area_m2", i.land_area_m2),
        ("solid_waste_generated_t", i.solid_waste_generated_t),
        ("solid_waste_utilized_t", i.solid_waste_utilized_t),
        ("unmetered_water_m3", i.unmetered_water_m3),
    ]
}

fn parse_time(text: &str) -> Result<Ms, String> {
    text.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            format!(
                "\"{}\" is not an RFC 3339 time with an offset (e.g. 2026-01-01T00:00:00+08:00)",
                text.chars().take(60).collect::<String>()
            )
        })
}

/// Validates one record against the registry. Errors are `(field, reason)`; an empty field
/// is about the record as a whole.
pub fn validate(i: &EconomicInputs, snap: &Snapshot) -> Result<Valid, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut bad = |f: &str, r: String| errs.push((f.to_owned(), r));
    match check_entity_path(&i.entity) {
        Err(r) => bad("entity", r),
        Ok(_) => match snap.entities.get(&i.entity) {
            None => bad("entity", format!("{} is not a registered entity", i.entity)),
            Some(e) if !matches!(e.kind, EntityKind::Enterprise | EntityKind::Workshop) => bad(
                "entity",
                format!(
                    "{} is a {}; economic inputs belong to an enterprise or a workshop",
                    i.entity,
                    entity_kind_name(e.kind)
                ),
            ),
            Some(_) => {}
        },
    }
    let from = parse_time(&i.from).map_err(|r| bad("from", r)).ok();
    let to = parse_time(&i.to).map_err(|r| bad("to", r)).ok();
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            bad("to", "must be after from".into());
        } else if t - f > MAX_PERIOD_DAYS * 86_400_000 {
            bad(
                "to",
                format!("the period is longer than {MAX_PERIOD_DAYS} days"),
            );
        }
    }
    let mut any = false;
    for (name, v) in values(i) {
        let Some(v) = v else { continue };
        any = true;
        if !v.is_finite() {
            bad(name, format!("must be a finite number, got {v}"));
        } else if v < 0.0 {
            bad(name, format!("must be ≥ 0, got {v}"));
        }
    }
    if !any {
        bad(
            "",
            format!(
                "at least one value is required ({})",
                COLUMNS[3..].join(", ")
            ),
        );
    }
    if let (Some(g), Some(u)) = (i.solid_waste_generated_t, i.solid_waste_utilized_t)
        && u > g
    {
        bad(
            "solid_waste_utilized_t",
            format!("{u} t utilised is more than the {g} t generated"),
        );
    }
    let doc = serde_json::to_value(i).map_err(|e| vec![(String::new(), e.to_string())]);
    match (errs.is_empty(), from, to, doc) {
        (true, Some(from), Some(to), Ok(doc)) => Ok(Valid {
            entity: i.entity.clone(),
            from,
            to,
            doc,
        }),
        (_, _, _, Err(e)) if errs.is_empty() => Err(e),
        _ => Err(errs),
    }
}

/// Validates every record of one submission; all or none.
pub fn validate_all(
    items: &[(Loc, EconomicInputs)],
    snap: &Snapshot,
) -> Result<Vec<Valid>, InputsError> {
    let mut out = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    let mut seen: BTreeMap<(String, Ms, Ms), &Loc> = BTreeMap::new();
    for (loc, i) in items {
        match validate(i, snap) {
            Ok(v) => {
                let key = (v.entity.clone(), v.from, v.to);
                if let Some(first) = seen.get(&key) {
                    errors.push(loc.message(
                        "",
                        &format!(
                            "same entity and period as {} (one version per submission)",
                            first.short()
                        ),
                    ));
                } else {
                    seen.insert(key, loc);
                }
                out.push(v);
            }
            Err(es) => errors.extend(es.iter().map(|(f, r)| loc.message(f, r))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        errors.truncate(MAX_ERRORS);
        Err(InputsError::Invalid(errors))
    }
}

/// Stores validated records, one new version each (audited with `actor` and `source`).
/// Returns the stored records with their versions.
pub async fn store(
    db: &Db,
    valid: Vec<Valid>,
    at: Ms,
    actor: &str,
    source: &str,
) -> Result<Vec<InputsRecord>, StoreError> {
    let mut stored = Vec::with_capacity(valid.len());
    for v in valid {
        let mut record = InputsRecord {
            entity: v.entity,
            from: v.from,
            to: v.to,
            version: 0,
            doc: v.doc,
            at,
            actor: actor.to_owned(),
            source: source.to_owned(),
        };
        record.version = db.inputs_put(&record).await?;
        stored.push(record);
    }
    Ok(stored)
}

/// Validates then stores a submission.
pub async fn submit(
    db: &Db,
    snap: &Snapshot,
    items: &[(Loc, EconomicInputs)],
    at: Ms,
    actor: &str,
    source: &str,
) -> Result<Vec<InputsRecord>, InputsError> {
    let valid = validate_all(items, snap)?;
    Ok(store(db, valid, at, actor, source).await?)
}

// ---------------------------------------------------------------------------------------------
// Import files
// ---------------------------------------------------------------------------------------------

/// Import file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Xlsx,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "csv" => Some(Format::Csv),
            "xlsx" => Some(Format::Xlsx),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Xlsx => "xlsx",
        }
    }
}

/// One cell of an import file.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Empty,
    Text(String),
    Number(f64),
    /// A cell that cannot be a value, with the reason.
    Unusable(String),
}

/// Builds a record from the cells of one row (`cols[i]` is the field of `cells[i]`).
fn record_of(
    cols: &[Option<usize>],
    cells: &[Cell],
) -> Result<EconomicInputs, Vec<(String, String)>> {
    let mut text: [Option<String>; 3] = [None, None, None];
    let mut nums: [Option<f64>; 7] = [None; 7];
    let mut errs = Vec::new();
    for (col, cell) in cols.iter().zip(cells) {
        let Some(f) = *col else { continue };
        let name = COLUMNS[f];
        let cell = match cell {
            Cell::Text(t) if t.trim().is_empty() => &Cell::Empty,
            c => c,
        };
        match (f, cell) {
            (_, Cell::Empty) => {}
            (_, Cell::Unusable(r)) => errs.push((name.to_owned(), r.clone())),
            (0..3, Cell::Text(t)) => text[f] = Some(t.trim().to_owned()),
            (0, Cell::Number(_)) => errs.push((name.to_owned(), "must be an entity path".into())),
            (0..3, Cell::Number(_)) => errs.push((
                name.to_owned(),
                "a number; write the time as RFC 3339 text with an offset \
                 (e.g. 2026-01-01T00:00:00+08:00)"
                    .into(),
            )),
            (_, Cell::Number(v)) => nums[f - 3] = Some(*v),
            (_, Cell::Text(t)) => match t.trim().parse::<f64>() {
                Ok(v) => nums[f - 3] = Some(v),
                Err(_) => errs.push((
                    name.to_owned(),
                    format!(
                        "\"{}\" is not a number",
                        t.chars().take(40).collect::<String>()
                    ),
                )),
            },
        }
    }
    for (f, t) in text.iter().enumerate() {
        if t.is_none() && !errs.iter().any(|(n, _)| n == COLUMNS[f]) {
            errs.push((COLUMNS[f].to_owned(), "required".into()));
        }
    }
    if !errs.is_empty() {
        return Err(errs);
    }
    let [entity, from, to] = text;
    Ok(EconomicInputs {
        entity: entity.unwrap_or_default(),
        from: from.unwrap_or_default(),
        to: to.unwrap_or_default(),
        value_added_cny: nums[0],
        gross_output_cny: nums[1],
        employees_avg: nums[2],
        land_area_m2: nums[3],
        solid_waste_generated_t: nums[4],
        solid_waste_utilized_t: nums[5],
        unmetered_water_m3: nums[6],
    })
}

/// Maps header names to fields: unknown, duplicate and missing required columns are errors.
/// `None` for a column that is ignored (an empty header over an empty column).
fn header_of(
    file: &str,
    row: usize,
    names: &[Option<String>],
) -> Result<Vec<Option<usize>>, Vec<String>> {
    let loc = Loc::Row {
        file: file.into(),
        row,
    };
    let mut errs = Vec::new();
    let mut cols = Vec::with_capacity(names.len());
    let mut seen = [false; COLUMNS.len()];
    for (i, n) in names.iter().enumerate() {
        let Some(n) = n else {
            cols.push(None);
            continue;
        };
        let n = n.trim();
        match COLUMNS.iter().position(|c| *c == n) {
            Some(f) if seen[f] => {
                errs.push(loc.message(n, "column given twice"));
                cols.push(None);
            }
            Some(f) => {
                seen[f] = true;
                cols.push(Some(f));
            }
            None => {
                let shown = if n.is_empty() {
                    column_letter(i)
                } else {
                    n.chars().take(40).collect()
                };
                errs.push(loc.message(
                    &shown,
                    &format!("unknown column; the columns are {}", COLUMNS.join(", ")),
                ));
                cols.push(None);
            }
        }
    }
    for (f, s) in seen.iter().enumerate().take(3) {
        if !s {
            errs.push(loc.message(COLUMNS[f], "required column missing"));
        }
    }
    if errs.is_empty() { Ok(cols) } else { Err(errs) }
}

/// Spreadsheet column name of a 0-based index: A … Z, AA, …
fn column_letter(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

/// Turns data rows (cells, or why the row cannot be read) into located records, collecting
/// every problem in row order.
fn rows_to_records(
    file: &str,
    cols: &[Option<usize>],
    rows: Vec<(usize, Result<Vec<Cell>, String>)>,
    mut errors: Vec<String>,
) -> Result<Vec<(Loc, EconomicInputs)>, InputsError> {
    let mut out = Vec::with_capacity(rows.len());
    for (row, cells) in rows {
        let loc = Loc::Row {
            file: file.into(),
            row,
        };
        match cells.map(|c| record_of(cols, &c)) {
            Ok(Ok(r)) => out.push((loc, r)),
            Ok(Err(es)) => errors.extend(es.iter().map(|(f, r)| loc.message(f, r))),
            Err(why) => errors.push(loc.message("", &why)),
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if errors.is_empty() {
        if out.is_empty() {
            return Err(InputsError::Invalid(vec![format!(
                "{file}: no data rows below the header"
            )]));
        }
        Ok(out)
    } else {
        errors.truncate(MAX_ERRORS);
        Err(InputsError::Invalid(errors))
    }
}

/// Parses a CSV file (UTF-8, optional BOM, header row with the field names in any order).
/// Rows are numbered by the line each record starts on (the header's line is row 1).
pub fn parse_csv(file: &str, bytes: &[u8]) -> Result<Vec<(Loc, EconomicInputs)>, InputsError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes);
    let invalid = |m: String| InputsError::Invalid(vec![m]);
    // csv reports the position where it started looking for a record, before the blank lines
    // it skips: step over them so the row is the line the record is on.
    let line = |p: Option<&csv::Position>, fallback: usize| {
        let Some(p) = p else { return fallback };
        let mut line = usize::try_from(p.line()).unwrap_or(fallback);
        let start = usize::try_from(p.byte()).unwrap_or(usize::MAX);
        for b in bytes.iter().skip(start) {
            match b {
                b'\n' => line += 1,
                b'\r' => {}
                _ => break,
            }
        }
        line
    };
    let mut records = rd.records();
    let (header_row, header) = match records.next() {
        None => {
            return Err(invalid(format!(
                "{file}: empty file; expected a header row"
            )));
        }
        Some(Err(e)) => {
            let row = line(e.position(), 1);
            return Err(invalid(format!("{file}: row {row}: {}", csv_reason(&e))));
        }
        Some(Ok(h)) => (line(h.position(), 1), h),
    };
    let names: Vec<Option<String>> = header.iter().map(|h| Some(h.to_owned())).collect();
    let cols = header_of(file, header_row, &names).map_err(InputsError::Invalid)?;
    let mut rows = Vec::new();
    for (i, rec) in records.enumerate() {
        if rows.len() >= MAX_ROWS {
            return Err(invalid(format!(
                "{file}: more than {MAX_ROWS} data rows; split the file"
            )));
        }
        match rec {
            Err(e) => rows.push((line(e.position(), header_row + i + 1), Err(csv_reason(&e)))),
            Ok(r) if r.iter().all(|c| c.trim().is_empty()) => {}
            Ok(r) => {
                let row = line(r.position(), header_row + i + 1);
                if r.len() == cols.len() {
                    rows.push((
                        row,
                        Ok(r.iter().map(|c| Cell::Text(c.to_owned())).collect()),
                    ));
                } else {
                    let why = format!("has {} cells, the header has {}", r.len(), cols.len());
                    rows.push((row, Err(why)));
                }
            }
        }
    }
    rows_to_records(file, &cols, rows, Vec::new())
}

fn csv_reason(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::Utf8 { .. } => "not UTF-8 text (save the file as \"CSV UTF-8\")".into(),
        _ => format!("unreadable CSV: {e}"),
    }
}

/// Parses the first sheet of an XLSX workbook (same layout as the CSV: a header row, then one
/// record per row; text, numbers, and times as RFC 3339 text).
pub fn parse_xlsx(file: &str, bytes: &[u8]) -> Result<Vec<(Loc, EconomicInputs)>, InputsError> {
    let invalid = |m: String| InputsError::Invalid(vec![m]);
    let mut wb = Xlsx::new(Cursor::new(bytes))
        .map_err(|e| invalid(format!("{file}: not a readable XLSX workbook: {e}")))?;
    let range = match wb.worksheet_range_at(0) {
        None => return Err(invalid(format!("{file}: the workbook has no sheet"))),
        Some(Err(e)) => return Err(invalid(format!("{file}: cannot read the first sheet: {e}"))),
        Some(Ok(r)) => r,
    };
    let Some((r0, c0)) = range.start() else {
        return Err(invalid(format!("{file}: the first sheet is empty")));
    };
    let first_col = c0 as usize;
    let mut iter = range.rows().enumerate();
    let Some((_, header)) = iter.next() else {
        return Err(invalid(format!("{file}: the first sheet is empty")));
    };
    let header_row = r0 as usize + 1;
    let width = header.len();
    // An empty header cell is ignored if nothing below it is filled in.
    let filled: Vec<bool> = (0..width)
        .map(|c| {
            range
                .rows()
                .skip(1)
                .any(|r| r.get(c).is_some_and(|d| !matches!(d, Data::Empty)))
        })
        .collect();
    let mut names = Vec::with_capacity(width);
    let mut errors = Vec::new();
    for (c, d) in header.iter().enumerate() {
        match d {
            Data::String(s) if !s.trim().is_empty() => names.push(Some(s.clone())),
            Data::Empty | Data::String(_) if !filled[c] => names.push(None),
            Data::Empty | Data::String(_) => {
                errors.push(format!(
                    "{file}: row {header_row}: {}: empty header above filled cells",
                    column_letter(first_col + c)
                ));
                names.push(None);
            }
            other => {
                errors.push(format!(
                    "{file}: row {header_row}: {}: header must be text, got {other}",
                    column_letter(first_col + c)
                ));
                names.push(None);
            }
        }
    }
    let cols = match header_of(file, header_row, &names) {
        Ok(c) if errors.is_empty() => c,
        Ok(_) => return Err(InputsError::Invalid(errors)),
        Err(mut e) => {
            errors.append(&mut e);
            return Err(InputsError::Invalid(errors));
        }
    };
    let mut rows = Vec::new();
    for (i, r) in iter {
        let row = r0 as usize + i + 1;
        if r.iter().all(|d| matches!(d, Data::Empty)) {
            continue;
        }
        if rows.len() >= MAX_ROWS {
            return Err(invalid(format!(
                "{file}: more than {MAX_ROWS} data rows; split the file"
            )));
        }
        rows.push((row, Ok(r.iter().map(xlsx_cell).collect())));
    }
    rows_to_records(file, &cols, rows, Vec::new())
}

fn xlsx_cell(d: &Data) -> Cell {
    match d {
        Data::Empty => Cell::Empty,
        Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => Cell::Text(s.clone()),
        Data::Float(f) => Cell::Number(*f),
        Data::Int(i) => Cell::Number(*i as f64),
        Data::Bool(b) => Cell::Unusable(format!("a boolean ({b}), expected a number or text")),
        Data::DateTime(_) => Cell::Unusable(
            "a date cell; write the time as RFC 3339 text with an offset \
             (e.g. 2026-01-01T00:00:00+08:00)"
                .into(),
        ),
        Data::Error(e) => Cell::Unusable(format!("cell error {e}")),
    }
}

/// Parses an import file of `format`.
pub fn parse(
    format: Format,
    file: &str,
    bytes: &[u8],
) -> Result<Vec<(Loc, EconomicInputs)>, InputsError> {
    match format {
        Format::Csv => parse_csv(file, bytes),
        Format::Xlsx => parse_xlsx(file, bytes),
    }
}

/// The audit source of an import: `csv:<name>` / `xlsx:<name>`.
pub fn source(format: Format, name: &str) -> String {
    format!("{}:{name}", format.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entity;

    fn snap() -> Snapshot {
        let mut s = Snapshot::default();
        for (id, kind) in [
            ("p1", "park"),
            ("p1/e1", "enterprise"),
            ("p1/e1/w1", "workshop"),
            ("p1/e1/w1/l1", "line"),
        ] {
            let e: Entity =
                serde_json::from_value(serde_json::json!({"id": id, "kind": kind})).unwrap();
            s.entities.insert(id.into(), e);
        }
        s
    }

    fn msgs(r: Result<Vec<(Loc, EconomicInputs)>, InputsError>) -> Vec<String> {
        match r {
            Err(InputsError::Invalid(m)) => m,
            other => panic!("expected errors, got {other:?}"),
        }
    }

    const HEAD: &str =
        "to,entity,from,value_added_cny,solid_waste_generated_t,solid_waste_utilized_t\n";

    #[test]
    fn csv_any_order_and_empty_cells() {
        let text = format!(
            "\u{feff}{HEAD}2026-02-01T00:00:00+08:00,p1/e1,2026-01-01T00:00:00+08:00,5000000,,\n\n\
             2026-03-01T00:00:00+08:00,p1/e1/w1,2026-02-01T00:00:00+08:00,,30,27\n"
        );
        let rows = parse_csv("in.csv", text.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[1].0,
            Loc::Row {
                file: "in.csv".into(),
                row: 4
            }
        );
        assert_eq!(rows[0].1.value_added_cny, Some(5e6));
        assert_eq!(rows[0].1.solid_waste_generated_t, None);
        let valid = validate_all(&rows, &snap()).unwrap();
        assert_eq!(valid[0].to - valid[0].from, 31 * 86_400_000);
    }

    #[test]
    fn csv_errors_name_file_row_and_column() {
        let m = msgs(parse_csv("x.csv", b"entity,from,to,color\n"));
        assert_eq!(
            m,
            vec![format!(
                "x.csv: row 1: color: unknown column; the columns are {}",
                COLUMNS.join(", ")
            )]
        );
        let m = msgs(parse_csv("x.csv", b"entity,to\n"));
        assert_eq!(m, vec!["x.csv: row 1: from: required column missing"]);
        let m = msgs(parse_csv(
            "x.csv",
            b"entity,from,to,employees_avg\np1/e1,a,b,many\np1/e1,a\n",
        ));
        assert_eq!(
            m,
            vec![
                "x.csv: row 2: employees_avg: \"many\" is not a number",
                "x.csv: row 3: has 2 cells, the header has 4"
            ]
        );
        let m = msgs(parse_csv(
            "x.csv",
            b"entity,from,to,employees_avg\n\xff\xfe,a,b,1\n",
        ));
        assert!(m[0].starts_with("x.csv: row 2: not UTF-8"), "{m:?}");
        assert!(
            msgs(parse_csv("x.csv", b""))
                .iter()
                .any(|m| m.contains("empty file"))
        );
        assert!(
            msgs(parse_csv("x.csv", b"entity,from,to\n"))
                .iter()
                .any(|m| m.contains("no data rows"))
        );
    }

    #[test]
    fn validation_rules() {
        let s = snap();
        let base = EconomicInputs {
            entity: "p1/e1".into(),
            from: "2026-01-01T00:00:00+08:00".into(),
            to: "2026-02-01T00:00:00+08:00".into(),
            value_added_cny: Some(1.0),
            gross_output_cny: None,
            employees_avg: None,
            land_area_m2: None,
            solid_waste_generated_t: None,
            solid_waste_utilized_t: None,
            unmetered_water_m3: None,
        };
        assert!(validate(&base, &s).is_ok());
        let fields = |i: EconomicInputs| -> Vec<String> {
            validate(&i, &s)
                .unwrap_err()
                .into_iter()
                .map(|(f, r)| format!("{f}: {r}"))
                .collect()
        };
        let mut i = base.clone();
        i.entity = "p1".into();
        assert_eq!(
            fields(i),
            vec!["entity: p1 is a park; economic inputs belong to an enterprise or a workshop"]
        );
        let mut i = base.clone();
        i.entity = "p1/e2".into();
        assert_eq!(fields(i), vec!["entity: p1/e2 is not a registered entity"]);
        let mut i = base.clone();
        i.to = i.from.clone();
        assert_eq!(fields(i), vec!["to: must be after from"]);
        let mut i = base.clone();
        i.from = "2026-01-01 00:00".into();
        assert!(fields(i)[0].starts_with("from: \"2026-01-01 00:00\" is not an RFC 3339 time"));
        let mut i = base.clone();
        i.value_added_cny = Some(-1.0);
        i.employees_avg = Some(f64::INFINITY);
        assert_eq!(
            fields(i),
            vec![
                "value_added_cny: must be ≥ 0, got -1",
                "employees_avg: must be a finite number, got inf"
            ]
        );
        let mut i = base.clone();
        i.solid_waste_generated_t = Some(1.0);
        i.solid_waste_utilized_t = Some(2.0);
        assert_eq!(
            fields(i),
            vec!["solid_waste_utilized_t: 2 t utilised is more than the 1 t generated"]
        );
        let mut i = base.clone();
        i.value_added_cny = None;
        assert!(fields(i)[0].starts_with(": at least one value is required"));
        // Duplicates within one submission.
        let two = vec![(Loc::Index(0), base.clone()), (Loc::Index(1), base)];
        match validate_all(&two, &s) {
            Err(InputsError::Invalid(m)) => assert_eq!(
                m,
                vec!["[1]: same entity and period as [0] (one version per submission)"]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn column_letters() {
        assert_eq!(column_letter(0), "A");
        assert_eq!(column_letter(25), "Z");
        assert_eq!(column_letter(26), "AA");
        assert_eq!(column_letter(27), "AB");
        assert_eq!(column_letter(701), "ZZ");
        assert_eq!(column_letter(702), "AAA");
    }

    #[test]
    fn xlsx_garbage_is_an_error() {
        let m = msgs(parse_xlsx("x.xlsx", b"PK\x03\x04 not really"));
        assert!(
            m[0].starts_with("x.xlsx: not a readable XLSX workbook"),
            "{m:?}"
        );
    }
}
