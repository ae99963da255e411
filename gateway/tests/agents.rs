//! Agent identity end to end: `shopfloor-gateway agents add|rotate|revoke|list` (the built
//! binary) against the store of a running gateway, and what ingest then does with batches
//! published over MQTT: accepted with the registered key, with the retired key inside the
//! overlap window and with the new key; quarantined as `revoked_key` once the old key is
//! revoked and as `revoked_agent` once the agent is; refused for agents defined in the files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    Broker, Signer, TestStore, free_port, new_key, now_ms, publish_all, start_gateway, wait_until,
    write_config, write_registry,
};
use serde_json::json;
use shopfloor_store::Store;

const PREFIX_BASE: &str = "sfagents";

fn cli(config: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shopfloor-gateway"))
        .arg("agents")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn empty(from: i64) -> serde_json::Value {
    json!({"from": from, "to": from + 60_000, "devices": []})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_rotate_and_revoke_while_the_gateway_runs() {
    let dir = tempfile::tempdir().unwrap();
    // The file registry defines only `w1-agent`; `a9` is managed with the command.
    let file_agent = Signer::new(common::AGENT, new_key());
    let registry = write_registry(dir.path(), &file_agent.public_key());
    let store = TestStore::sqlite(dir.path()).await;
    let port = free_port();
    let prefix = common::unique(PREFIX_BASE);
    let config = write_config(
        dir.path(),
        "gw",
        &store.url,
        &Broker::Embedded(port),
        &prefix,
        &registry,
    );

    let k1_secret = new_key();
    let k2_secret = new_key();
    let mut a9 = Signer::new("a9", k1_secret.clone());
    let k1 = a9.public_key();
    let (code, _, err) = cli(
        &config,
        &["add", "--id", "a9", "--pubkey", &k1, "--scope", "p1/e1/w1"],
    );
    assert_eq!(code, 0, "{err}");
    // Bad input names the argument and exits 2; file agents are refused.
    let (code, _, err) = cli(
        &config,
        &[
            "add",
            "--id",
            "a8",
            "--pubkey",
            "ed25519:AAAA",
            "--scope",
            "p1/e1/w1",
        ],
    );
    assert_eq!((code, err.contains("--pubkey:")), (2, true), "{err}");
    let (code, _, err) = cli(
        &config,
        &["add", "--id", "a8", "--pubkey", &k1, "--scope", "p9"],
    );
    assert_eq!((code, err.contains("scope[0]")), (2, true), "{err}");
    let (code, _, err) = cli(&config, &["revoke", "--id", common::AGENT]);
    assert_eq!((code, err.contains("agents.toml")), (2, true), "{err}");

    let gw = start_gateway(&config).await;
    let t0 = now_ms() - 3_600_000;
    publish_all(port, &prefix, "a9", vec![a9.next(empty(t0))]).await;
    wait_stored(&gw.db, "a9", &[1]).await;

    // Rotation: the new key is registered; the old one stays valid for an hour.
    let k2 = shopfloor_core::batch::public_key_text(&k2_secret.verifying_key());
    let (code, out, err) = cli(
        &config,
        &["rotate", "--id", "a9", "--pubkey", &k2, "--overlap", "1h"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&k1) && out.contains("previous_keys"), "{out}");
    wait_until(
        Duration::from_secs(20),
        "the rotation reaches the gateway",
        || {
            gw.registry
                .snapshot()
                .agents
                .get("a9")
                .is_some_and(|a| a.public_key == k2)
        },
    )
    .await;
    let p2 = a9.next(empty(t0 + 60_000)); // seq 2: old key, inside the window
    a9.set_key(k2_secret.clone()); // `shopfloor-agent key activate`
    let p3 = a9.next(empty(t0 + 120_000)); // seq 3: new key
    publish_all(port, &prefix, "a9", vec![p2, p3]).await;
    wait_stored(&gw.db, "a9", &[1, 2, 3]).await;

    // The old key is revoked: a batch signed with it is quarantined as `revoked_key`.
    let (code, _, err) = cli(&config, &["revoke", "--id", "a9", "--key", &k1]);
    assert_eq!(code, 0, "{err}");
    wait_until(
        Duration::from_secs(20),
        "the revocation reaches the gateway",
        || {
            gw.registry
                .snapshot()
                .agents
                .get("a9")
                .is_some_and(|a| a.revoked_keys.contains(&k1))
        },
    )
    .await;
    a9.set_key(k1_secret); // someone holding the old key
    let p4 = a9.next(empty(t0 + 180_000)); // seq 4
    publish_all(port, &prefix, "a9", vec![p4]).await;
    let reasons = wait_quarantined(&gw.db, "a9", 1).await;
    assert_eq!(reasons, vec!["revoked_key".to_owned()]);

    // The whole agent revoked: its current key no longer counts either.
    let (code, _, err) = cli(&config, &["revoke", "--id", "a9"]);
    assert_eq!(code, 0, "{err}");
    wait_until(Duration::from_secs(20), "the agent's revocation", || {
        gw.registry
            .snapshot()
            .agents
            .get("a9")
            .is_some_and(|a| a.revoked)
    })
    .await;
    a9.set_key(k2_secret);
    let p5 = a9.next(empty(t0 + 240_000)); // seq 5
    publish_all(port, &prefix, "a9", vec![p5]).await;
    let reasons = wait_quarantined(&gw.db, "a9", 2).await;
    assert_eq!(reasons, vec!["revoked_key", "revoked_agent"]);
    assert_eq!(stored(&gw.db, "a9").await, vec![1, 2, 3]);

    // `list` shows the history; every change is in the audit log with the CLI actor.
    let (code, out, err) = cli(&config, &["list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("a9\trevoked"), "{out}");
    assert!(out.contains(&format!("  revoked\t{k1}")), "{out}");
    let audit = gw
        .db
        .audit(&shopfloor_store::AuditFilter {
            kind_prefix: Some("registry.agent".into()),
            item: Some("a9".into()),
            since: None,
            limit: 100,
        })
        .await
        .unwrap();
    let cli_changes = audit.iter().filter(|a| a.actor.starts_with("cli:")).count();
    assert_eq!(cli_changes, 4, "{audit:#?}");

    gw.stop().await;
    store.cleanup().await;
}

async fn stored(db: &shopfloor_gateway::db::Db, agent: &str) -> Vec<i64> {
    db.batches(agent, 0, i64::MAX, false)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect()
}

async fn wait_stored(db: &shopfloor_gateway::db::Db, agent: &str, seqs: &[i64]) {
    for _ in 0..200 {
        if stored(db, agent).await == seqs {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("stored {:?}, want {seqs:?}", stored(db, agent).await);
}

async fn wait_quarantined(db: &shopfloor_gateway::db::Db, agent: &str, n: usize) -> Vec<String> {
    let mut reasons = Vec::new();
    for _ in 0..200 {
        let rows = db.list_quarantine(None, 100).await.unwrap();
        reasons = rows
            .iter()
            .filter(|q| q.row.agent.as_deref() == Some(agent))
            .map(|q| q.row.reason.clone())
            .collect::<Vec<_>>();
        reasons.sort_by_key(|r| r != "revoked_key");
        if reasons.len() >= n {
            return reasons;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("quarantined {reasons:?}, want {n}");
}
