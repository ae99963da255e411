//! `shopfloor-gateway agents …`: registering agents and managing their signing keys from the
//! command line (docs/SECURITY.md, "Agent identity"). Every change goes through the registry
//! (validated against the whole registry, audited with actor `cli:<user>`); a running gateway
//! picks it up within [`crate::run::REGISTRY_REFRESH`].
//!
//! Key life cycle:
//! - `add`: a new agent with its public key and scopes.
//! - `rotate --pubkey NEW [--overlap 24h]`: NEW becomes the current key; the old one moves to
//!   `previous_keys`, accepted for batches received until now + overlap, so batches the agent
//!   sealed before switching still arrive as data. `--revoke-old` instead puts the old key on
//!   `revoked_keys` at once (a stolen key: nothing signed with it is accepted any more).
//! - `revoke --key KEY`: one key revoked; `revoke` without `--key`: the whole agent.
//!
//! The registry files are applied first (as at a start of the gateway). Agents defined in them
//! are refused here: the files win at every start, so a change made here would silently be
//! undone. Edit the file instead.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use shopfloor_core::batch;

use crate::config::GatewayConfig;
use crate::db::Db;
use crate::ingest::Trust;
use crate::model::{Agent, KIND_AGENT, RetiredKey};
use crate::registry::{Registry, RegistryError};

/// Default overlap window of a rotation.
pub const DEFAULT_OVERLAP: &str = "24h";
/// Longest overlap window accepted.
const MAX_OVERLAP_S: i64 = 90 * 86_400;

/// What to do (the subcommands of `agents`).
#[derive(Debug, Clone)]
pub enum Action {
    Add {
        id: String,
        pubkey: String,
        scope: Vec<String>,
    },
    Rotate {
        id: String,
        pubkey: String,
        overlap: String,
        revoke_old: bool,
    },
    Revoke {
        id: String,
        key: Option<String>,
    },
    List,
}

/// Why an action cannot be done: bad input (exit 2) or a runtime failure (exit 1).
#[derive(Debug)]
enum Failure {
    Input(String),
    Runtime(String),
}

fn input(msg: impl Into<String>) -> Failure {
    Failure::Input(msg.into())
}

/// Parses an overlap like `24h`, `90m`, `7d` (jiff's friendly durations; `d` = 24 h).
pub fn parse_overlap(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 24h, 90m or 7d"))?;
    let per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let s = n.saturating_mul(per);
    if s > MAX_OVERLAP_S {
        return Err(format!("{text:?} is longer than 90 days"));
    }
    Ok(s)
}

/// Applies `action` to the agent document `current` (None: not registered) at `now_ms`.
/// Returns the new document. Pure, so the rules are unit-tested.
pub fn apply(action: &Action, current: Option<&Agent>, now_ms: i64) -> Result<Agent, String> {
    let key = |field: &str, text: &str| -> Result<String, String> {
        batch::parse_public_key(text)
            .map(|k| batch::public_key_text(&k))
            .map_err(|e| match e {
                batch::BatchError::BadKey(r) => format!("{field}: {r}"),
                e => format!("{field}: {e}"),
            })
    };
    match action {
        Action::Add { id, pubkey, scope } => {
            if current.is_some() {
                return Err(format!(
                    "--id: agent {id:?} is already registered (rotate its key with `agents \
                     rotate`)"
                ));
            }
            if scope.is_empty() {
                return Err("--scope: name at least one entity whose devices it reports".into());
            }
            Ok(Agent {
                id: id.clone(),
                public_key: key("--pubkey", pubkey)?,
                previous_keys: Vec::new(),
                revoked_keys: Vec::new(),
                scope: scope.clone(),
                revoked: false,
            })
        }
        Action::Rotate {
            id,
            pubkey,
            overlap,
            revoke_old,
        } => {
            let a = current.ok_or_else(|| format!("--id: agent {id:?} is not registered"))?;
            let new = key("--pubkey", pubkey)?;
            let old = a.public_key.clone();
            if new == old {
                return Err("--pubkey: this is already the agent's current key".into());
            }
            let mut out = a.clone();
            out.public_key = new.clone();
            out.previous_keys.retain(|k| k.public_key != new);
            if *revoke_old {
                if !out.revoked_keys.contains(&old) {
                    out.revoked_keys.push(old);
                }
            } else {
                let s = parse_overlap(overlap).map_err(|e| format!("--overlap: {e}"))?;
                let until = jiff::Timestamp::from_millisecond(now_ms.saturating_add(s * 1000))
                    .map_err(|e| format!("--overlap: {e}"))?;
                out.previous_keys.retain(|k| k.public_key != old);
                out.previous_keys.push(RetiredKey {
                    public_key: old,
                    until: until.to_string(),
                });
            }
            Ok(out)
        }
        Action::Revoke { id, key: k } => {
            let a = current.ok_or_else(|| format!("--id: agent {id:?} is not registered"))?;
            let mut out = a.clone();
            match k {
                None => out.revoked = true,
                Some(text) => {
                    let k = key("--key", text)?;
                    if k == a.public_key {
                        return Err("--key: this is the agent's current key; rotate to a new \
                                    key with `agents rotate --revoke-old` (or revoke the whole \
                                    agent without --key)"
                            .into());
                    }
                    out.previous_keys.retain(|p| p.public_key != k);
                    if !out.revoked_keys.contains(&k) {
                        out.revoked_keys.push(k);
                    }
                }
            }
            Ok(out)
        }
        Action::List => Err("list changes nothing".into()),
    }
}

fn id_of(action: &Action) -> Option<&str> {
    match action {
        Action::Add { id, .. } | Action::Rotate { id, .. } | Action::Revoke { id, .. } => Some(id),
        Action::List => None,
    }
}

/// `shopfloor-gateway agents …`.
pub fn main(config_path: &Path, action: Action) -> ExitCode {
    let cfg = match crate::cli::config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match crate::cli::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let db = match crate::cli::store(&cfg).await {
            Ok(db) => db,
            Err(code) => return code,
        };
        match run(&cfg, db, &action).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Input(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Err(Failure::Runtime(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        }
    })
}

async fn run(cfg: &GatewayConfig, db: Db, action: &Action) -> Result<(), Failure> {
    // The files win at every start: refuse to change what they define.
    let files =
        crate::registry::check_files(cfg.registry.dir.as_deref(), cfg.registry.targets.as_deref())
            .map_err(|errs| {
                input(
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
    if let Some(id) = id_of(action)
        && files.agents.contains_key(id)
    {
        return Err(input(format!(
            "--id: agent {id:?} is defined in {}/agents.toml, which replaces the stored agent \
             at every start; change it there",
            cfg.registry
                .dir
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )));
    }
    let registry = Registry::load(db, Arc::new(Trust::new()))
        .await
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    // The entities an agent's scopes name may so far exist only in the files: apply them
    // first, as a start of the gateway does.
    if cfg.registry.dir.is_some() || cfg.registry.targets.is_some() {
        registry
            .sync_files(
                cfg.registry.dir.as_deref(),
                cfg.registry.targets.as_deref(),
                jiff::Timestamp::now().as_millisecond(),
            )
            .await
            .map_err(|errs| {
                input(
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n"),
                )
            })?;
    }
    let snap = registry.snapshot();
    if matches!(action, Action::List) {
        for a in snap.agents.values() {
            let state = if a.revoked { "revoked" } else { "active" };
            println!("{}\t{state}\t{}\t{}", a.id, a.public_key, a.scope.join(","));
            for k in &a.previous_keys {
                println!("  previous\t{}\tuntil {}", k.public_key, k.until);
            }
            for k in &a.revoked_keys {
                println!("  revoked\t{k}");
            }
        }
        return Ok(());
    }
    let Some(id) = id_of(action) else {
        return Ok(());
    };
    let now = jiff::Timestamp::now().as_millisecond();
    let doc = apply(action, snap.agents.get(id), now).map_err(input)?;
    let value = serde_json::to_value(&doc).map_err(|e| Failure::Runtime(e.to_string()))?;
    let actor = format!("cli:{}", crate::run::whoami());
    match registry.put(KIND_AGENT, value, &actor).await {
        Ok(_) => {
            eprintln!(
                "agent {id:?} updated (a running gateway applies it within {} s)",
                crate::run::REGISTRY_REFRESH.as_secs()
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_else(|_| id.to_owned())
            );
            Ok(())
        }
        Err(RegistryError::Invalid(msgs)) => Err(input(msgs.join("\n"))),
        Err(e) => Err(Failure::Runtime(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> String {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[n; 32]);
        batch::public_key_text(&sk.verifying_key())
    }

    fn agent() -> Agent {
        apply(
            &Action::Add {
                id: "a1".into(),
                pubkey: key(1),
                scope: vec!["p1/e1".into()],
            },
            None,
            0,
        )
        .unwrap()
    }

    #[test]
    fn add_refuses_duplicates_bad_keys_and_empty_scopes() {
        let a = agent();
        assert_eq!(a.public_key, key(1));
        let again = Action::Add {
            id: "a1".into(),
            pubkey: key(2),
            scope: vec!["p1".into()],
        };
        assert!(apply(&again, Some(&a), 0).unwrap_err().contains("already"));
        let bad = Action::Add {
            id: "a2".into(),
            pubkey: "ed25519:xyz".into(),
            scope: vec!["p1".into()],
        };
        assert!(apply(&bad, None, 0).unwrap_err().starts_with("--pubkey:"));
        let none = Action::Add {
            id: "a2".into(),
            pubkey: key(2),
            scope: vec![],
        };
        assert!(apply(&none, None, 0).unwrap_err().starts_with("--scope:"));
    }

    #[test]
    fn rotate_keeps_the_old_key_for_the_overlap_or_revokes_it() {
        let a = agent();
        let r = Action::Rotate {
            id: "a1".into(),
            pubkey: key(2),
            overlap: "2h".into(),
            revoke_old: false,
        };
        let b = apply(&r, Some(&a), 1_000).unwrap();
        assert_eq!(b.public_key, key(2));
        assert_eq!(b.previous_keys.len(), 1);
        assert_eq!(b.previous_keys[0].public_key, key(1));
        let until: jiff::Timestamp = b.previous_keys[0].until.parse().unwrap();
        assert_eq!(until.as_millisecond(), 1_000 + 7_200_000);
        assert!(b.revoked_keys.is_empty());

        let r = Action::Rotate {
            id: "a1".into(),
            pubkey: key(3),
            overlap: DEFAULT_OVERLAP.into(),
            revoke_old: true,
        };
        let c = apply(&r, Some(&b), 2_000).unwrap();
        assert_eq!(c.public_key, key(3));
        assert_eq!(c.revoked_keys, vec![key(2)]);
        assert_eq!(c.previous_keys.len(), 1, "the older retired key stays");

        let same = Action::Rotate {
            id: "a1".into(),
            pubkey: key(3),
            overlap: "1h".into(),
            revoke_old: false,
        };
        assert!(apply(&same, Some(&c), 0).is_err());
        let bad = Action::Rotate {
            id: "a1".into(),
            pubkey: key(4),
            overlap: "1 week".into(),
            revoke_old: false,
        };
        assert!(
            apply(&bad, Some(&c), 0)
                .unwrap_err()
                .starts_with("--overlap:")
        );
    }

    #[test]
    fn revoke_a_key_or_the_agent() {
        let a = agent();
        let cur = Action::Revoke {
            id: "a1".into(),
            key: Some(key(1)),
        };
        assert!(
            apply(&cur, Some(&a), 0)
                .unwrap_err()
                .contains("current key")
        );
        let r = Action::Rotate {
            id: "a1".into(),
            pubkey: key(2),
            overlap: "1h".into(),
            revoke_old: false,
        };
        let b = apply(&r, Some(&a), 0).unwrap();
        let old = Action::Revoke {
            id: "a1".into(),
            key: Some(key(1)),
        };
        let c = apply(&old, Some(&b), 0).unwrap();
        assert!(
            c.previous_keys.is_empty(),
            "a revoked key is not also retired"
        );
        assert_eq!(c.revoked_keys, vec![key(1)]);
        let all = Action::Revoke {
            id: "a1".into(),
            key: None,
        };
        assert!(apply(&all, Some(&c), 0).unwrap().revoked);
        assert!(apply(&all, None, 0).unwrap_err().contains("not registered"));
    }

    #[test]
    fn overlaps() {
        assert_eq!(parse_overlap("24h"), Ok(86_400));
        assert_eq!(parse_overlap("90m"), Ok(5_400));
        assert_eq!(parse_overlap("7d"), Ok(604_800));
        assert!(parse_overlap("91d").is_err());
        assert!(parse_overlap("h").is_err());
        assert!(parse_overlap("5w").is_err());
    }
}
