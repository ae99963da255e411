#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The conformance suite on a fresh database file, and what only SQLite has: reopening a file,
//! large calls, files that are not databases.

use shopfloor_store::{
    Chain, DirtyRange, NewBatch, Outcome, ReadingRow, SampleRow, StateRow, Store, StoreError,
};
use shopfloor_store_sqlite::SqliteStore;

fn url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}", dir.path().join(name).display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir, "gateway.db")).await.unwrap();
    shopfloor_store::conformance::run(&store).await;
    store.ping().await.unwrap();
    store.close().await;
}

const ZERO: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const T0: i64 = 1_789_999_200_000;

fn hash(agent: u8, seq: i64) -> String {
    format!("{agent:02x}00{seq:060x}")
}

/// A chain batch of `agent` (number `n`) with `readings` counter readings and a few samples.
fn batch(agent: &str, n: u8, seq: i64, readings: usize) -> NewBatch {
    let from = T0 + (seq - 1) * 10_000;
    let to = from + 10_000;
    let device = format!("p1/e1/w1/l1/{agent}-m");
    NewBatch {
        agent: agent.to_owned(),
        seq,
        body_hash: hash(n, seq),
        prev: if seq == 1 {
            ZERO.to_owned()
        } else {
            hash(n, seq - 1)
        },
        sealed: to,
        from,
        to,
        received: to + 100,
        payload: format!("{{\"body\":{{\"seq\":{seq}}},\"sig\":\"x\"}}").into_bytes(),
        samples: (0..3)
            .map(|k| SampleRow {
                device: device.clone(),
                point: format!("p{k}"),
                t: from + k * 1_000,
                num: Some(k as f64 + 0.5),
                is_bool: false,
                text: None,
                err: None,
            })
            .collect(),
        states: vec![StateRow {
            device: device.clone(),
            from,
            to,
            state: "producing".to_owned(),
        }],
        readings: (0..readings)
            .map(|k| ReadingRow {
                device: device.clone(),
                role: "produced".to_owned(),
                point: format!("c{}", k % 8),
                t: from + (k as i64 * 10_000) / readings as i64,
                v: (seq * 1_000 + k as i64) as f64,
                width_bits: Some(32),
                rollover: None,
            })
            .collect(),
        links: Vec::new(),
        dirty: vec![DirtyRange { device, from, to }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_data_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(&dir, "gateway.db");
    let store = SqliteStore::open(&u).await.unwrap();
    let b = batch("a1", 1, 1, 4);
    store.ingest(std::slice::from_ref(&b)).await.unwrap();
    store.close().await;

    // `sqlite:PATH` names the same file.
    let store = SqliteStore::open(&format!(
        "sqlite:{}",
        dir.path().join("gateway.db").display()
    ))
    .await
    .unwrap();
    let stored = store.batches("a1", 1, 1, true).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].payload.as_deref(), Some(b.payload.as_slice()));
    assert_eq!(
        store.ingest(std::slice::from_ref(&b)).await.unwrap(),
        vec![Outcome::Duplicate { same_hash: true }]
    );
    assert_eq!(
        store.ingest(&[batch("a1", 1, 2, 4)]).await.unwrap(),
        vec![Outcome::Stored {
            chain: Chain::Linked
        }]
    );
    let slice = store
        .raw_slice("p1/e1/w1/l1/a1-m", T0, T0 + 20_000)
        .await
        .unwrap();
    assert_eq!(slice.readings.len(), 8);
    assert_eq!(store.dirty(10).await.unwrap().len(), 2);
    store.close().await;
    // A third open still finds the schema in place.
    let store = SqliteStore::open(&u).await.unwrap();
    assert_eq!(store.agent_heads().await.unwrap()[0].batches, 2);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_batches_in_one_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir, "gateway.db")).await.unwrap();
    // 40 readings: one 32-row statement and 8 single rows per batch.
    let batches: Vec<NewBatch> = (1..=1_000).map(|seq| batch("big", 7, seq, 40)).collect();
    let out = store.ingest(&batches).await.unwrap();
    assert_eq!(out.len(), 1_000);
    assert!(out.iter().all(|o| *o
        == Outcome::Stored {
            chain: Chain::Linked
        }));
    let heads = store.agent_heads().await.unwrap();
    assert_eq!(
        (
            heads[0].batches,
            heads[0].first_seq,
            heads[0].last_seq,
            heads[0].missing
        ),
        (1_000, 1, 1_000, 0)
    );
    assert_eq!(store.dirty(5_000).await.unwrap().len(), 1_000);
    let slice = store
        .raw_slice("p1/e1/w1/l1/big-m", T0, T0 + 1_000 * 10_000)
        .await
        .unwrap();
    let mut want: Vec<ReadingRow> = batches.iter().flat_map(|b| b.readings.clone()).collect();
    want.sort_by(|x, y| (&x.role, &x.point, x.t).cmp(&(&y.role, &y.point, y.t)));
    assert_eq!(slice.readings.len(), 40_000);
    assert_eq!(slice.readings, want);
    assert_eq!(slice.states.len(), 1_000);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_queue_without_busy_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir, "gateway.db")).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..4u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let agent = format!("agent-{n}");
            for seq in 1..=50 {
                let out = store.ingest(&[batch(&agent, n, seq, 10)]).await.unwrap();
                assert_eq!(
                    out,
                    vec![Outcome::Stored {
                        chain: Chain::Linked
                    }]
                );
                // Reads run beside the writer.
                store.agent_heads().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let heads = store.agent_heads().await.unwrap();
    assert_eq!(heads.len(), 4);
    assert!(heads.iter().all(|h| h.batches == 50 && h.missing == 0));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, b"these are my notes, not a database\n".repeat(200)).unwrap();
    let err = SqliteStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Db(_)), "{msg}");
    assert!(msg.contains("notes.db"), "names the file: {msg}");
    assert!(msg.contains("not an SQLite database"), "says why: {msg}");
    // The file is left as it was.
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"these are my notes, not a database\n".repeat(200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_programs_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let u = url(&dir, "other.db");
    {
        use sqlx::ConnectOptions as _;
        let opts: sqlx::sqlite::SqliteConnectOptions = u.parse().unwrap();
        let mut conn = opts.create_if_missing(true).connect().await.unwrap();
        sqlx::query("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::Connection::close(conn).await.unwrap();
    }
    let err = SqliteStore::open(&u).await.unwrap_err().to_string();
    assert!(err.contains("something else"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_and_missing_directories_are_clear_errors() {
    let err = SqliteStore::open("sqlite::memory:")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("in-memory"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/gateway.db");
    let err = SqliteStore::open(&format!("sqlite://{}", missing.display()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("gateway.db"), "{err}");
    assert!(err.contains("directory exists"), "{err}");
}

/// Ingest throughput (run with `--ignored --nocapture`, ideally `--release`): 100 calls of
/// 10 batches × 500 readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark"]
async fn ingest_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url(&dir, "gateway.db")).await.unwrap();
    let calls: Vec<Vec<NewBatch>> = (0..100)
        .map(|c| {
            (1..=10)
                .map(|i| batch("bench", 9, c * 10 + i, 500))
                .collect()
        })
        .collect();
    let start = std::time::Instant::now();
    for call in &calls {
        store.ingest(call).await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    let readings = 100.0 * 10.0 * 500.0;
    println!(
        "ingest: {:.0} readings/s ({readings} readings, {:.0} batches/s, {secs:.2} s)",
        readings / secs,
        1_000.0 / secs
    );
    store.close().await;
}

/// Two processes (here: two opens at once) creating the same new database both succeed: the
/// migrations run once, under the lock file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_opens_of_a_new_database_both_succeed() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("new.db").display());
        let (a, b) = tokio::join!(
            tokio::spawn({
                let url = url.clone();
                async move { SqliteStore::open(&url).await }
            }),
            tokio::spawn({
                let url = url.clone();
                async move { SqliteStore::open(&url).await }
            })
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.is_ok() && b.is_ok(), "round {round}: {a:?} / {b:?}");
    }
}
