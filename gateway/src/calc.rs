//! `shopfloor-gateway calc --evidence FILE`: the auditor's recompute command (DESIGN.md §2–3).
//! Same engine as the gateway's roll-ups: it only reads the file and prints.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Map, Number, Value, json};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Evidence file (JSON, schema shopfloor.evidence/1).
    #[arg(long, value_name = "FILE")]
    evidence: PathBuf,
    /// Print the full result: units, completeness, coefficients used, assessments and, for a
    /// park, each enterprise.
    #[arg(long)]
    detail: bool,
}

/// Whole numbers print as integers (`25200`, not `25200.0`); everything else as the shortest
/// decimal that reads back to the same f64.
fn number(v: Option<f64>) -> Value {
    match v {
        None => Value::Null,
        Some(x) if x.fract() == 0.0 && x.abs() < 9.0e15 => Value::Number(Number::from(x as i64)),
        Some(x) => Number::from_f64(x).map_or(Value::Null, Value::Number),
    }
}

fn indicators_json(values: &BTreeMap<&str, Option<f64>>) -> Value {
    Value::Object(
        values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), number(*v)))
            .collect::<Map<_, _>>(),
    )
}

pub fn run(args: &Args) -> ExitCode {
    let shown = args.evidence.display();
    let text = match std::fs::read_to_string(&args.evidence) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {shown}: cannot read: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match shopfloor_core::calc(&text) {
        Ok(r) => r,
        Err(e) => {
            for fe in &e.errors {
                eprintln!("error: {shown}: {fe}");
            }
            return ExitCode::from(2);
        }
    };
    let out = if args.detail {
        match serde_json::to_value(&report) {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("schema".into(), json!("shopfloor.result/1"));
                }
                v
            }
            Err(e) => {
                eprintln!("error: cannot encode the result: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        json!({ "indicators": indicators_json(&report.values()) })
    };
    let mut stdout = std::io::stdout().lock();
    match serde_json::to_writer_pretty(&mut stdout, &out)
        .and_then(|()| writeln!(stdout).map_err(serde_json::Error::io))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write the result: {e}");
            ExitCode::from(1)
        }
    }
}
