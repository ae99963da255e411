//! The fault suite (issue 9): one chain of real processes per scenario, in-process simulator
//! (a CNC and a meter over Modbus TCP) → `shopfloor-agent` binary (1 s batches) → private
//! Mosquitto with persistence → `shopfloor-gateway` binary (external broker, persistent
//! session) → store, with one fault each:
//!
//! - `broker_restart_loop`: Mosquitto stopped (SIGTERM, it saves its sessions) and started
//!   again 5 times, every 3 s, the gateway on a plain subscription (the variant with a shared
//!   subscription, `broker_restart_loop_shared_subscription`, is ignored: Mosquitto 2.0 does
//!   not persist shared subscriptions and loses batches there);
//! - `agent_cut_off`: the agent's connection to the broker cut for 20 s (a proxy refusing and
//!   closing connections), then restored;
//! - `gateway_sigkill_loop`: the gateway SIGKILLed 5 times, 0.7–3.5 s after each start, and
//!   started again 0.8 s later (the agent cuts several batches a second here);
//! - `postgres_restart`: the gateway stores into a private PostgreSQL cluster that crashes and
//!   restarts twice (`pg_ctl restart -m immediate`);
//! - `agent_disk_full`: the agent's data directory on a 16 MiB tmpfs filled to ENOSPC, first
//!   with the broker up, then with it cut off; then space comes back, then the broker;
//! - `agent_clock_jumps`: the agent's wall clock (libfaketime) set back 2 h, to real time,
//!   30 s ahead (beyond the gateway's `ingest.max_future_s`, 10 s here), back to real time.
//!
//! Each scenario prints one line (sent, stored, redelivered-discarded, stored twice, lost,
//! forced drops with their counters) and writes `target/fault-suite/<scenario>.json`, then
//! asserts DESIGN.md §7: nothing acknowledged is lost, nothing is stored twice, 1..=sent is
//! complete (stored, or quarantined where the scenario expects it), every drop is counted, and
//! no process crashed. Missing prerequisites (mosquitto, PostgreSQL binaries, mount permission,
//! libfaketime) skip a scenario with a notice, or fail it when `CI=true`. Scenarios run one at a
//! time (a global lock): `cargo test -p shopfloor-gateway --test faults`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "common/faults.rs"]
mod harness;

use std::time::Duration;

use harness::*;

const SKEW: &str = "clock_skew";

/// Restarts the broker (graceful stop, start; persistence on) 5 times every 3 s during ingest.
async fn broker_restarts(test: &str, shared_group: Option<String>) {
    let _serial = serial().await;
    if !require(test, have_mosquitto()) {
        return;
    }
    let mut chain = Chain::start(ChainOpts {
        shared_group,
        ..ChainOpts::default()
    })
    .await;
    chain.wait_stored(3, Duration::from_secs(60)).await;
    for i in 0..5 {
        chain.hold(Duration::from_secs(3), "between restarts").await;
        chain.broker.stop();
        chain
            .hold(Duration::from_secs(1), &format!("broker down ({i})"))
            .await;
        chain.broker.restart();
    }
    chain
        .hold(Duration::from_secs(2), "after the restarts")
        .await;
    let report = chain.finish(test, &[]).await;
    report.assert_promises();
}

/// The gateway on a plain subscription (`mqtt.shared_group = ""`, the default), which
/// Mosquitto keeps in the persistent session across its restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_loop() {
    broker_restarts("broker_restart_loop", None).await;
}

/// The same with a shared subscription (`$share/<group>/…`, `mqtt.shared_group` set). Mosquitto 2.0 does not persist shared subscriptions: after its restart the
/// gateway's session comes back without it, and every batch an agent publishes before the
/// gateway has subscribed again is acknowledged to the agent and delivered to no one. Measured
/// (Mosquitto 2.0.11): 10 of 26 batches lost over 5 restarts. Run it with `--ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known loss: Mosquitto 2.0 does not persist shared subscriptions across a restart"]
async fn broker_restart_loop_shared_subscription() {
    broker_restarts(
        "broker_restart_loop_shared_subscription",
        Some(common::unique("sf")),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_cut_off() {
    let test = "agent_cut_off";
    let _serial = serial().await;
    if !require(test, have_mosquitto()) {
        return;
    }
    let mut chain = Chain::start(ChainOpts {
        via_proxy: true,
        ..ChainOpts::default()
    })
    .await;
    chain.wait_stored(3, Duration::from_secs(60)).await;
    let proxy = chain.proxy.clone().unwrap();
    proxy.cut();
    chain.hold(Duration::from_secs(20), "cut off").await;
    // The backlog is in the outbox, not lost in flight.
    let backlog = chain.agent.metric("shopfloor_agent_outbox_batches");
    assert!(
        backlog >= 10.0,
        "only {backlog} batches in the outbox after 20 s cut off"
    );
    proxy.restore();
    let report = chain.finish(test, &[]).await;
    report.assert_promises();
    assert!(report.stored >= 20, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_sigkill_loop() {
    let test = "gateway_sigkill_loop";
    let _serial = serial().await;
    if !require(test, have_mosquitto()) {
        return;
    }
    // Windows cut early at 4 raw samples: several batches a second to ingest.
    let mut chain = Chain::start(ChainOpts {
        max_samples: Some(4),
        ..ChainOpts::default()
    })
    .await;
    chain.wait_stored(3, Duration::from_secs(60)).await;
    // Killed 5 times, each time at another point after its start (while it starts, connects,
    // takes the backlog that piled up in the broker while it was down, or ingests live).
    for ms in [2500, 700, 1200, 3500, 1800] {
        chain.hold(Duration::from_millis(ms), "between kills").await;
        chain.gateway.sigkill();
        chain.hold(Duration::from_millis(800), "gateway down").await;
        chain.gateway.start();
    }
    chain.hold(Duration::from_secs(2), "after the kills").await;
    let report = chain.finish(test, &[]).await;
    report.assert_promises();
    assert_eq!(report.gateway_starts, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart() {
    let test = "postgres_restart";
    let _serial = serial().await;
    if !require(test, have_mosquitto()) {
        return;
    }
    let bin = match pg_bin() {
        Ok(b) => b,
        Err(why) => {
            require(test, Err(why));
            return;
        }
    };
    let cluster = PgCluster::start(bin);
    let mut chain = Chain::start(ChainOpts {
        store_url: Some(cluster.url()),
        ..ChainOpts::default()
    })
    .await;
    chain.wait_stored(3, Duration::from_secs(60)).await;
    for i in 0..2 {
        chain.hold(Duration::from_secs(4), "before a crash").await;
        cluster.crash_restart();
        chain
            .hold(
                Duration::from_secs(4),
                &format!("after PostgreSQL crash {i}"),
            )
            .await;
    }
    let report = chain.finish(test, &[]).await;
    report.assert_promises();
    assert_eq!(report.gateway_starts, 1, "the gateway was never restarted");
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_disk_full() {
    let test = "agent_disk_full";
    let _serial = serial().await;
    if !require(test, have_mosquitto()) {
        return;
    }
    let fs = match Tmpfs::mount("16m") {
        Ok(fs) => fs,
        Err(why) => {
            require(test, Err(why));
            return;
        }
    };
    let data = fs.path.join("agent");
    let mut chain = Chain::start(ChainOpts {
        agent_data: Some(data),
        via_proxy: true,
        ..ChainOpts::default()
    })
    .await;
    chain.wait_stored(3, Duration::from_secs(60)).await;
    let filler = fs.path.join("filler");
    let filled = fs.fill(&filler);
    let _ = writeln_stderr(&format!("{test}: filler of {filled} bytes, disk full"));
    // Phase 1: the disk is full, the broker is up.
    chain
        .hold(Duration::from_secs(8), "disk full, broker up")
        .await;
    let errors_up = chain
        .agent
        .metric("shopfloor_agent_outbox_write_errors_total");
    // Phase 2: the disk is full and the broker is cut off.
    let proxy = chain.proxy.clone().unwrap();
    proxy.cut();
    chain
        .hold(Duration::from_secs(8), "disk full, broker cut")
        .await;
    let errors = chain
        .agent
        .metric("shopfloor_agent_outbox_write_errors_total");
    assert!(errors > 0.0, "the full disk caused no outbox write error");
    let held = chain.agent.metric("shopfloor_agent_memory_batches");
    assert!(held > 0.0, "no batch held in memory while the disk is full");
    // Phase 3: space comes back, the broker is still away: the backlog lands in the outbox.
    std::fs::remove_file(&filler).unwrap();
    chain
        .hold(Duration::from_secs(4), "space back, broker cut")
        .await;
    proxy.restore();
    let report = chain.finish(test, &[]).await;
    let _ = writeln_stderr(&format!(
        "{test}: outbox write errors: {errors_up} with the broker up, {errors} in all"
    ));
    report.assert_promises();
    assert!(report.drop_count("shopfloor_agent_outbox_write_errors_total") > 0);
    drop(fs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_clock_jumps() {
    let test = "agent_clock_jumps";
    let _serial = serial().await;
    if !require(test, have_mosquitto()) {
        return;
    }
    let lib = match faketime_lib() {
        Ok(l) => l,
        Err(why) => {
            require(test, Err(why));
            return;
        }
    };
    let clock_dir = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(clock_dir.path(), lib);
    let mut chain = Chain::start(ChainOpts {
        agent_env: clock.env(),
        max_future_s: Some(10),
        ..ChainOpts::default()
    })
    .await;
    chain.wait_stored(3, Duration::from_secs(60)).await;
    clock.set("-7200");
    chain.hold(Duration::from_secs(6), "clock 2 h back").await;
    clock.set("+0");
    chain.hold(Duration::from_secs(5), "clock real again").await;
    clock.set("+30");
    chain.hold(Duration::from_secs(5), "clock 30 s ahead").await;
    clock.set("+0");
    // The agent's windows never go back: they stay at the clock's furthest point until real
    // time reaches it, and the gateway quarantines what lies beyond its max_future_s.
    chain
        .hold(Duration::from_secs(25), "clock real again")
        .await;
    let report = chain.finish(test, &[SKEW]).await;
    report.assert_promises();
    assert!(
        report.drop_count("shopfloor_agent_events_out_of_order_total") > 0,
        "setting the clock back produced no out-of-order event"
    );
    assert!(
        report.quarantined > 0 && report.quarantine_reasons.contains(SKEW),
        "nothing quarantined as clock_skew: {report:?}"
    );
}

fn writeln_stderr(s: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    writeln!(std::io::stderr(), "{s}")
}
