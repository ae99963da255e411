#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The outbox: order and seq continuity across reopen, replay, the budget policy exactly as
//! documented, clear errors on bad files, and survival of SIGKILL (a child process).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ed25519_dalek::SigningKey;
use shopfloor_agent::outbox::{self, Fsync, Outbox, OutboxConfig, OutboxError};
use shopfloor_core::batch::{
    self, Contents, DeviceData, PointSamples, Sample, SampleValue, Sealed, StateSpan, Summary,
    ZERO_HASH,
};
use shopfloor_core::evidence::State;

const AGENT: &str = "line1-agent";
const T0: i64 = 1_790_000_000_000;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// Window `i` (one minute) of two devices with `n` raw samples each.
fn contents(i: i64, n: usize) -> Contents {
    let from = T0 + i * 60_000;
    let to = from + 60_000;
    let device = |id: &str| DeviceData {
        id: id.to_owned(),
        template: "cnc-modbus-generic".to_owned(),
        samples: vec![PointSamples {
            point: "spindle_load".to_owned(),
            samples: (0..n)
                .map(|k| Sample {
                    t: from + 100 * k as i64 + 1,
                    v: Some(SampleValue::Float(40.5)),
                    err: None,
                })
                .collect(),
        }],
        summaries: vec![Summary {
            point: "spindle_load".to_owned(),
            count: n as u64,
            errors: 0,
            first: None,
            last: None,
            min: Some(40.5),
            max: Some(40.5),
        }],
        states: vec![StateSpan {
            from,
            to,
            state: State::Producing,
        }],
        counters: vec![],
        links: vec![],
        dropped: None,
    };
    Contents {
        from,
        to,
        devices: vec![device("p1/e1/w1/l1/cnc-01"), device("p1/e1/w1/l1/cnc-02")],
    }
}

/// Stored size of contents, as the outbox stores them (their JSON).
fn size(c: &Contents) -> u64 {
    serde_json::to_vec(c).unwrap().len() as u64
}

fn stripped(mut c: Contents) -> Contents {
    c.strip_samples();
    c
}

fn cfg(dir: &Path, budget_bytes: u64) -> OutboxConfig {
    OutboxConfig {
        path: dir.join("outbox.db"),
        budget_bytes,
        fsync: Fsync::Full,
    }
}

async fn open(dir: &Path, budget_bytes: u64) -> Outbox {
    outbox::open(cfg(dir, budget_bytes)).await.unwrap()
}

/// Opens, verifies and checks the chain of consecutive sealed batches starting after
/// (`seq0`, `prev0`); returns the opened bodies.
fn verify_chain(sealed: &[Sealed], seq0: u64, prev0: &str) -> Vec<batch::Opened> {
    let vk = key().verifying_key();
    let mut prev = prev0.to_owned();
    let mut out = Vec::new();
    for (i, s) in sealed.iter().enumerate() {
        let o = batch::open(&s.payload).unwrap();
        o.verify(&vk).unwrap();
        assert_eq!(o.body.seq, seq0 + 1 + i as u64);
        assert_eq!(s.seq, o.body.seq);
        assert_eq!(o.body.agent, AGENT);
        assert!(o.follows(&prev), "seq {} does not chain", o.body.seq);
        assert_eq!(o.body_hash, s.body_hash);
        prev = o.body_hash.clone();
        out.push(o);
    }
    out
}

#[tokio::test]
async fn push_seal_ack_in_order_and_seq_continues_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    {
        let ob = open(tmp.path(), u64::MAX / 2).await;
        assert_eq!(ob.chain_head().await.unwrap(), (0, ZERO_HASH.to_owned()));
        assert!(ob.seal_next(AGENT, &key(), 1).await.unwrap().is_none());
        let mut ids = Vec::new();
        for i in 0..3 {
            ids.push(ob.push(&contents(i, 5)).await.unwrap().id);
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        for now in 0..2 {
            all.push(
                ob.seal_next(AGENT, &key(), T0 + now)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        ob.ack(1).await.unwrap();
        ob.ack(1).await.unwrap(); // idempotent
        ob.ack(99).await.unwrap(); // unknown: ignored
        let st = ob.stats().await.unwrap();
        assert_eq!((st.batches, st.sealed, st.last_seq), (2, 1, 2));
        assert!(st.oldest_created_ms.is_some());
        ob.close().await;
    }
    {
        // Reopen: the chain continues at seq 3 from the head's hash.
        let ob = open(tmp.path(), u64::MAX / 2).await;
        assert_eq!(
            ob.chain_head().await.unwrap(),
            (2, all[1].body_hash.clone())
        );
        ob.push(&contents(3, 5)).await.unwrap();
        all.push(ob.seal_next(AGENT, &key(), T0 + 2).await.unwrap().unwrap());
        all.push(ob.seal_next(AGENT, &key(), T0 + 3).await.unwrap().unwrap());
        assert!(ob.seal_next(AGENT, &key(), T0 + 4).await.unwrap().is_none());
        // Dropped without close.
    }
    {
        let ob = open(tmp.path(), u64::MAX / 2).await;
        ob.push(&contents(4, 0)).await.unwrap();
        all.push(ob.seal_next(AGENT, &key(), T0 + 5).await.unwrap().unwrap());
        let opened = verify_chain(&all, 0, ZERO_HASH);
        // Sealed in push order (lowest id first), windows as pushed, seal times as given.
        for (i, o) in opened.iter().enumerate() {
            assert_eq!(o.body.from, contents(i as i64, 0).from);
            assert_eq!(o.body.sealed, T0 + [0, 1, 2, 3, 5][i]);
            assert_eq!(
                o.body.devices,
                contents(i as i64, if i < 4 { 5 } else { 0 }).devices
            );
        }
        for seq in 2..=5 {
            ob.ack(seq).await.unwrap();
        }
        let st = ob.stats().await.unwrap();
        assert_eq!((st.batches, st.sealed, st.bytes, st.last_seq), (0, 0, 0, 5));
        assert_eq!(st.oldest_created_ms, None);
        assert_eq!((st.dropped_samples, st.dropped_batches), (0, 0));
    }
}

#[tokio::test]
async fn unacked_batches_are_replayed_in_order_after_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sealed = Vec::new();
    {
        let ob = open(tmp.path(), u64::MAX / 2).await;
        for i in 0..5 {
            ob.push(&contents(i, 3)).await.unwrap();
            sealed.push(ob.seal_next(AGENT, &key(), T0 + i).await.unwrap().unwrap());
        }
        ob.push(&contents(5, 3)).await.unwrap(); // unsealed: not replayed
        ob.ack(2).await.unwrap(); // acks may arrive out of order
    }
    let ob = open(tmp.path(), u64::MAX / 2).await;
    let replay = ob.unacked(0, 100).await.unwrap();
    let expected: Vec<Sealed> = sealed.iter().filter(|s| s.seq != 2).cloned().collect();
    assert_eq!(replay, expected); // byte-identical payloads: never re-sealed
    assert_eq!(
        ob.unacked(3, 1).await.unwrap(),
        vec![sealed[3].clone()],
        "after_seq and limit"
    );
    assert!(ob.unacked(5, 10).await.unwrap().is_empty());
    verify_chain(&sealed, 0, ZERO_HASH);
    // The next seal continues after the replayed ones.
    let next = ob.seal_next(AGENT, &key(), T0 + 9).await.unwrap().unwrap();
    assert_eq!(next.seq, 6);
    verify_chain(&[next], 5, &sealed[4].body_hash);
}

#[tokio::test]
async fn budget_strips_oldest_unsealed_first_then_drops_batches_never_sealed_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 10usize; // raw samples per device, 2 devices: 20 per batch
    let full = size(&contents(0, n));
    let strip = size(&stripped(contents(0, n)));
    assert!(strip < full);
    for i in 1..=7 {
        // Same size for every window (same digit counts), so the arithmetic below is exact.
        assert_eq!(size(&contents(i, n)), full);
    }

    // Rows 0..=3 under a large budget; row 0 sealed (seq 1).
    let (sealed1, p1) = {
        let ob = open(tmp.path(), u64::MAX / 2).await;
        for i in 0..4 {
            let r = ob.push(&contents(i, n)).await.unwrap();
            assert_eq!((r.stripped_samples, r.dropped_batches), (0, 0));
        }
        let s = ob.seal_next(AGENT, &key(), T0).await.unwrap().unwrap();
        let p = s.payload.len() as u64;
        (s, p)
    };
    assert_eq!(
        open(tmp.path(), u64::MAX / 2)
            .await
            .stats()
            .await
            .unwrap()
            .bytes,
        p1 + 3 * full
    );

    // Budget for: sealed + 2 stripped + 2 full. Push row 4 (full): rows 1 and 2 are stripped
    // (oldest first), rows 3 and 4 keep their samples.
    {
        let ob = open(tmp.path(), p1 + 2 * strip + 2 * full).await;
        let r = ob.push(&contents(4, n)).await.unwrap();
        assert_eq!(
            (r.stripped_samples, r.dropped_batches),
            (2 * 2 * n as u64, 0)
        );
        let st = ob.stats().await.unwrap();
        assert_eq!(st.bytes, p1 + 2 * strip + 2 * full);
        assert_eq!((st.batches, st.sealed), (5, 1));
        assert_eq!((st.dropped_samples, st.dropped_batches), (40, 0));
        assert_eq!(ob.unacked(0, 10).await.unwrap(), vec![sealed1.clone()]);
    }

    // Budget for: sealed + 2 stripped. Push row 5: rows 3, 4, 5 stripped (samples first, all
    // of them), then rows 1, 2, 3 deleted (oldest unsealed first): rows 4 and 5 remain.
    {
        let ob = open(tmp.path(), p1 + 2 * strip).await;
        let r = ob.push(&contents(5, n)).await.unwrap();
        assert_eq!(
            (r.stripped_samples, r.dropped_batches),
            (3 * 2 * n as u64, 3)
        );
        let st = ob.stats().await.unwrap();
        assert_eq!(st.bytes, p1 + 2 * strip);
        assert_eq!((st.batches, st.sealed), (3, 1));
        assert_eq!((st.dropped_samples, st.dropped_batches), (100, 3));
        assert_eq!(ob.unacked(0, 10).await.unwrap(), vec![sealed1.clone()]);
        // What remains unsealed is rows 4 and 5, stripped, with their states and summaries:
        // seal them and look.
        let s2 = ob.seal_next(AGENT, &key(), T0 + 1).await.unwrap().unwrap();
        let s3 = ob.seal_next(AGENT, &key(), T0 + 2).await.unwrap().unwrap();
        let opened = verify_chain(&[sealed1.clone(), s2, s3], 0, ZERO_HASH);
        for (o, i) in opened[1..].iter().zip([4, 5]) {
            assert_eq!(o.body.devices, stripped(contents(i, n)).devices);
            for d in &o.body.devices {
                assert_eq!(d.dropped.unwrap().samples, n as u64);
                assert!(d.samples.is_empty());
                assert_eq!(d.states.len(), 1);
                assert_eq!(d.summaries.len(), 1);
            }
        }
    }

    // A budget smaller than the sealed rows alone: the new row is stripped and then dropped,
    // with nothing else left to drop; sealed rows stay untouched.
    {
        let ob = open(tmp.path(), 1).await;
        let before = ob.unacked(0, 10).await.unwrap();
        assert_eq!(before.len(), 3);
        let r = ob.push(&contents(6, n)).await.unwrap();
        assert_eq!((r.stripped_samples, r.dropped_batches), (2 * n as u64, 1));
        assert_eq!(ob.unacked(0, 10).await.unwrap(), before);
        let st = ob.stats().await.unwrap();
        assert_eq!((st.batches, st.sealed), (3, 3));
        assert_eq!((st.dropped_samples, st.dropped_batches), (120, 4));
        assert!(ob.seal_next(AGENT, &key(), T0 + 3).await.unwrap().is_none());
        // Acks free the space again.
        for seq in 1..=3 {
            ob.ack(seq).await.unwrap();
        }
        assert_eq!(ob.stats().await.unwrap().bytes, 0);
        assert_eq!(ob.chain_head().await.unwrap().0, 3);
    }
}

#[tokio::test]
async fn invalid_contents_are_refused_on_push() {
    let tmp = tempfile::tempdir().unwrap();
    let ob = open(tmp.path(), 1 << 30).await;
    let mut c = contents(0, 1);
    c.devices.swap(0, 1);
    let e = ob.push(&c).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, OutboxError::Batch { .. }), "{msg}");
    assert!(e.is_permanent());
    assert!(msg.contains("devices[1].id"), "{msg}");
    assert!(msg.contains("outbox.db"), "{msg}");
    assert_eq!(ob.stats().await.unwrap().batches, 0);
}

#[tokio::test]
async fn the_chain_belongs_to_one_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let ob = open(tmp.path(), 1 << 30).await;
    ob.push(&contents(0, 1)).await.unwrap();
    ob.push(&contents(1, 1)).await.unwrap();
    ob.seal_next(AGENT, &key(), T0).await.unwrap().unwrap();
    let e = ob.seal_next("other-agent", &key(), T0).await.unwrap_err();
    assert!(e.to_string().contains("own data directory"), "{e}");
    // Nothing changed: the next seal as the right agent is seq 2.
    assert_eq!(
        ob.seal_next(AGENT, &key(), T0).await.unwrap().unwrap().seq,
        2
    );
}

/// Runs one statement on the outbox file behind the outbox's back.
async fn tamper(path: &Path, sql: &'static str) {
    use sqlx::ConnectOptions as _;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    sqlx::query(sql).execute(&mut conn).await.unwrap();
    sqlx::Connection::close(conn).await.unwrap();
}

/// Sealing places the stored bytes into the body without decoding them, trusting them by their
/// SHA-256: a row changed on disk is dropped and counted (never sealed with other data than
/// was pushed), a row without a hash (stored by an older agent) is decoded and sealed as
/// before, and the two ways give the same payload.
#[tokio::test]
async fn seal_trusts_stored_contents_only_by_their_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("outbox.db");
    let ob = open(tmp.path(), 1 << 30).await;
    for i in 0..4 {
        ob.push(&contents(i, 3)).await.unwrap();
    }
    ob.close().await;
    // Row 2: one value changed on disk (still valid JSON, still valid contents).
    tamper(
        &path,
        "UPDATE batches SET contents = CAST(REPLACE(CAST(contents AS TEXT), '40.5', '41.5') \
         AS BLOB) WHERE id = 2",
    )
    .await;
    // Rows 3 and 4: no hash, as an agent before the hash column stored them; row 4 also
    // invalid (devices out of order).
    tamper(
        &path,
        "UPDATE batches SET contents_sha256 = NULL WHERE id >= 3",
    )
    .await;
    tamper(
        &path,
        "UPDATE batches SET contents = CAST(REPLACE(CAST(contents AS TEXT), 'cnc-01', 'cnc-09') \
         AS BLOB) WHERE id = 4",
    )
    .await;
    let ob = open(tmp.path(), 1 << 30).await;
    let first = ob.seal_next(AGENT, &key(), T0).await.unwrap().unwrap();
    let second = ob.seal_next(AGENT, &key(), T0).await.unwrap().unwrap();
    assert!(ob.seal_next(AGENT, &key(), T0).await.unwrap().is_none());
    let opened = verify_chain(&[first.clone(), second.clone()], 0, ZERO_HASH);
    // Row 1 sealed from its bytes, row 2 dropped, row 3 decoded and sealed as seq 2.
    assert_eq!(opened[0].body.devices, contents(0, 3).devices);
    assert_eq!(opened[1].body.devices, contents(2, 3).devices);
    let st = ob.stats().await.unwrap();
    assert_eq!((st.dropped_samples, st.dropped_batches), (12, 2));
    // Either way the payload is the one sealing the pushed contents gives.
    let again = batch::seal(contents(0, 3), AGENT, 1, ZERO_HASH, T0, &key()).unwrap();
    assert_eq!(first, again);
    let again = batch::seal(contents(2, 3), AGENT, 2, &first.body_hash, T0, &key()).unwrap();
    assert_eq!(second, again);
}

#[tokio::test]
async fn non_sqlite_file_gives_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("outbox.db");
    std::fs::write(
        &path,
        "this is a text file, certainly not a database\n".repeat(100),
    )
    .unwrap();
    let e = outbox::open(cfg(tmp.path(), 1 << 20)).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("not an SQLite database"), "{msg}");
    println!("{msg}");
    // The file is left as it was.
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("this is a text file")
    );

    // A damaged database behind a valid header: SQLite's own error, with the file name.
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(std::iter::repeat_n(0xa5u8, 8192));
    std::fs::write(&path, &bytes).unwrap();
    let msg = outbox::open(cfg(tmp.path(), 1 << 20))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("cannot open"), "{msg}");
    println!("{msg}");

    // Another application's SQLite database: refused, not extended with our tables.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let db = other.join("outbox.db");
    std::fs::copy(sqlite_with_a_foreign_table(tmp.path()).await, &db).unwrap();
    let msg = outbox::open(cfg(&other, 1 << 20))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not an outbox"), "{msg}");
    println!("{msg}");

    // A directory in the file's place.
    let dir = tmp.path().join("d");
    std::fs::create_dir_all(dir.join("outbox.db")).unwrap();
    let msg = outbox::open(cfg(&dir, 1 << 20))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("is a directory"), "{msg}");
    println!("{msg}");
}

/// An SQLite file with one unrelated table (made with sqlx itself).
async fn sqlite_with_a_foreign_table(dir: &Path) -> PathBuf {
    use sqlx::ConnectOptions as _;
    let path = dir.join("foreign.db");
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .connect()
        .await
        .unwrap();
    sqlx::query("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::Connection::close(conn).await.unwrap();
    path
}

#[cfg(unix)]
#[tokio::test]
async fn unreadable_file_gives_permission_denied() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    open(tmp.path(), 1 << 20).await.close().await;
    let path = tmp.path().join("outbox.db");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&path).is_ok() {
        // Running as root: permissions do not apply; nothing to test.
        return;
    }
    let msg = outbox::open(cfg(tmp.path(), 1 << 20))
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("permission denied"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[tokio::test]
async fn creates_missing_directories_and_both_fsync_policies_work() {
    let tmp = tempfile::tempdir().unwrap();
    for (sub, fsync) in [("a/full", Fsync::Full), ("b/normal", Fsync::Normal)] {
        let path: PathBuf = tmp.path().join(sub).join("outbox.db");
        let ob = outbox::open(OutboxConfig {
            path: path.clone(),
            budget_bytes: 1 << 20,
            fsync,
        })
        .await
        .unwrap();
        ob.push(&contents(0, 2)).await.unwrap();
        assert_eq!(ob.path(), path);
        ob.close().await;
        let ob = outbox::open(OutboxConfig {
            path,
            budget_bytes: 1 << 20,
            fsync,
        })
        .await
        .unwrap();
        assert_eq!(ob.stats().await.unwrap().batches, 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Crash consistency: a child process pushes and seals as fast as it can and reports each
// batch once `push`/`seal_next` has returned; the parent kills it with SIGKILL mid-stream and
// checks that every reported batch is in the file, the chain is intact, and the outbox keeps
// working.

const CHILD_ENV: &str = "SHOPFLOOR_OUTBOX_CRASH_CHILD";

/// Not a test on its own: the child process of `survives_sigkill` (does nothing otherwise).
#[tokio::test]
async fn crash_child_helper() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let ob = outbox::open(OutboxConfig {
        path: Path::new(&dir).join("outbox.db"),
        budget_bytes: 1 << 30,
        fsync: Fsync::Normal,
    })
    .await
    .unwrap();
    for i in 0.. {
        let r = ob.push(&contents(i, 20)).await.unwrap();
        println!("pushed {} {}", r.id, contents(i, 20).from);
        if i % 2 == 0 {
            let s = ob.seal_next(AGENT, &key(), T0 + i).await.unwrap().unwrap();
            println!("sealed {} {}", s.seq, s.body_hash);
        }
    }
}

#[tokio::test]
async fn survives_sigkill() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut pushed = Vec::new(); // (id, from)
    let mut sealed = Vec::new(); // (seq, hash)
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["pushed", id, from] => {
                pushed.push((id.parse::<i64>().unwrap(), from.parse::<i64>().unwrap()))
            }
            ["sealed", seq, hash] => sealed.push((seq.parse::<u64>().unwrap(), hash.to_string())),
            _ => continue,
        }
        if pushed.len() >= 60 {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        pushed.len() >= 60 && sealed.len() >= 29,
        "child stopped early"
    );

    let ob = open(tmp.path(), 1 << 30).await;
    let (head_seq, _) = ob.chain_head().await.unwrap();
    assert!(
        head_seq >= sealed.last().unwrap().0,
        "a reported seal was lost"
    );
    // Every reported seal is there, byte for byte chained from seq 1.
    let replay = ob.unacked(0, 10_000).await.unwrap();
    assert_eq!(replay.len() as u64, head_seq);
    let opened = verify_chain(&replay, 0, ZERO_HASH);
    for (seq, hash) in &sealed {
        assert_eq!(&opened[*seq as usize - 1].body_hash, hash);
    }
    // Every reported push is there: sealed ones by their window, the rest unsealed.
    let st = ob.stats().await.unwrap();
    let unsealed = st.batches - st.sealed;
    assert!(
        st.batches >= pushed.len() as u64,
        "{st:?} < {} pushed",
        pushed.len()
    );
    // And the outbox goes on: the remaining batches seal in order after the head.
    let mut more = Vec::new();
    for _ in 0..unsealed {
        more.push(ob.seal_next(AGENT, &key(), T0).await.unwrap().unwrap());
    }
    let all: Vec<Sealed> = replay.into_iter().chain(more).collect();
    let opened = verify_chain(&all, 0, ZERO_HASH);
    let windows: Vec<i64> = opened.iter().map(|o| o.body.from).collect();
    for (_, from) in &pushed {
        assert!(windows.contains(from), "pushed window {from} lost");
    }
    assert!(
        windows.windows(2).all(|w| w[0] < w[1]),
        "sealed out of push order"
    );
}
