//! The agent's configuration: `shopfloor_agent::config::parse_str` (what `load` does after
//! reading the file) on any text. Never a panic; every error names a reason; a configuration
//! that loads gives its acquisition plan.
//!
//! No network and no reads outside a directory that does not exist: the text is given as the
//! contents of `/nonexistent-shopfloor-fuzz/agent.toml`, so relative file names resolve under
//! a missing directory, and inputs that would make the parser resolve a host name (`host` that
//! is not an IP literal) or open an absolute path (`templates_dir`, `*_file`, `user_cert`,
//! `user_key`) are skipped.

#![no_main]

use std::net::IpAddr;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

const FILE: &str = "/nonexistent-shopfloor-fuzz/agent.toml";

fn file_key(key: &str) -> bool {
    key == "templates_dir" || key.ends_with("_file") || key == "user_cert" || key == "user_key"
}

/// Whether the parser would leave the process for this key and value: DNS or a file outside
/// the missing directory.
fn escapes(key: &str, v: &DeValue<'_>) -> bool {
    let Some(s) = v.as_str() else {
        return false;
    };
    (key == "host" && s.trim_matches(['[', ']']).parse::<IpAddr>().is_err())
        || (file_key(key) && s.starts_with('/'))
}

fn table_escapes(t: &DeTable<'_>) -> bool {
    t.iter()
        .any(|(k, v)| escapes(k.get_ref(), v.get_ref()) || value_escapes(v))
}

fn value_escapes(v: &Spanned<DeValue<'_>>) -> bool {
    match v.get_ref() {
        DeValue::Table(t) => table_escapes(t),
        DeValue::Array(a) => a.iter().any(value_escapes),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (root, syntax) = DeTable::parse_recoverable(text);
    if syntax.is_empty() && table_escapes(root.get_ref()) {
        return;
    }
    match shopfloor_agent::config::parse_str(Path::new(FILE), text) {
        Ok(cfg) => {
            let _ = cfg.acquisition();
        }
        Err(errors) => {
            for e in errors.iter() {
                assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
                let _ = e.to_string();
            }
        }
    }
});
