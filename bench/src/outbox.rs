//! Outbox write rate, and drain rate after a one-hour backlog.
//!
//! The batch: what a 1 s batch interval of a 50-machine workshop looks like: 50 CNC devices,
//! each with 20 points × 3 raw samples, a summary per point, one state span and three part
//! counters (produced, good, scrap) with a reading each.
//!
//! Runs, in one process, on the same tempdir:
//! - **baseline write**: the same contents JSON appended to a plain file with `write_all` +
//!   `sync_data()` per batch (an append-only log with per-batch fsync);
//! - **outbox write**: [`Outbox::push`] of the same contents into a fresh outbox, with
//!   `Fsync::Full` and with `Fsync::Normal` (one hour: 3,600 batches each);
//! - **baseline seal**: decoding each logged contents and [`batch::seal`]ing it (canonical
//!   encoding, SHA-256, Ed25519) without any storage: the CPU floor of a drain;
//! - **outbox drain**: on each one-hour backlog, `seal_next` + `ack` until the outbox is empty
//!   (what the publisher does with an instant PUBACK);
//! - **replay**: a fresh hour pushed (`Fsync::Normal`), sealed completely, then read back
//!   with `unacked(after, 32)` pages (the publisher's default in-flight window) until the
//!   end, then acknowledged; baseline: reading the append-only log back.
//!
//! Times are wall time around the measured calls only (building the contents is outside);
//! CPU is utime + stime of this process (every thread, SQLite's worker included) from
//! /proc/self/stat, minus the CPU of building the contents, measured alone. Linux only.
//!
//! Run: `shopfloor-bench outbox` (SHOPFLOOR_BENCH_BATCHES to change the 3,600 batches of an
//! hour).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use shopfloor_agent::outbox::{Fsync, Outbox, OutboxConfig};
use shopfloor_core::batch::{
    self, Contents, CounterReadings, DeviceData, PointSamples, Reading, Sample, SampleValue,
    StateSpan, Summary,
};
use shopfloor_core::evidence::State;

use crate::Ctx;
use crate::util::{Figure, cores, cpu_seconds, env_f64, runtime, tempdir};

const SCENARIO: &str = "outbox";

const DEVICES: usize = 50;
const SAMPLES_PER_POINT: usize = 3;
/// 2026-11-21T08:00:00Z.
const T0: i64 = 1_795_248_000_000;
const AGENT: &str = "bench-agent";
/// The publisher's default in-flight window (`mqtt.inflight`).
const PAGE: usize = 32;

/// 20 points: 5 status bits, 5 integers, 10 analog values.
const POINTS: [&str; 20] = [
    "run",
    "alarm",
    "setup",
    "planned_stop",
    "feed_hold",
    "alarm_code",
    "program_number",
    "feed_override_pct",
    "spindle_override_pct",
    "tool_number",
    "spindle_speed_rpm",
    "spindle_load_pct",
    "last_cycle_time_s",
    "power_on_hours",
    "x_axis_load_pct",
    "y_axis_load_pct",
    "z_axis_load_pct",
    "coolant_temp_c",
    "spindle_temp_c",
    "power_w",
];

/// A cheap deterministic hash, so values vary from sample to sample.
fn mix(a: u64, b: u64, c: u64, d: u64) -> u64 {
    let mut x = a
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(c.wrapping_mul(0x1656_67B1_9E37_79F9))
        .wrapping_add(d);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

/// The contents of batch `i`: window `(T0 + i s, T0 + (i + 1) s]`.
fn contents(i: u64) -> Contents {
    let from = T0 + i as i64 * 1000;
    let to = from + 1000;
    let mut devices = Vec::with_capacity(DEVICES);
    for d in 0..DEVICES {
        let id = format!("p1/e1/w1/l{}/cnc-{:02}", d / 10 + 1, d + 1);
        let mut samples = Vec::with_capacity(POINTS.len());
        let mut summaries = Vec::with_capacity(POINTS.len());
        for (p, name) in POINTS.iter().enumerate() {
            let mut ss = Vec::with_capacity(SAMPLES_PER_POINT);
            let mut nums = Vec::with_capacity(SAMPLES_PER_POINT);
            for k in 0..SAMPLES_PER_POINT {
                let t = from + 1 + k as i64 * 333 + d as i64;
                let h = mix(i, d as u64, p as u64, k as u64);
                let (v, n) = match p {
                    0..5 => {
                        let b = h.is_multiple_of(7);
                        (SampleValue::Bool(b), f64::from(u8::from(b)))
                    }
                    5..10 => {
                        let n = (h % 10_000) as i64;
                        (SampleValue::Int(n), n as f64)
                    }
                    _ => {
                        // Two decimals, like a scaled register: 0.00 … 9,999.99.
                        let f = (h % 1_000_000) as f64 / 100.0;
                        (SampleValue::Float(f), f)
                    }
                };
                ss.push(Sample {
                    t,
                    v: Some(v),
                    err: None,
                });
                nums.push(Reading { t, v: n });
            }
            let min = nums.iter().map(|r| r.v).fold(f64::INFINITY, f64::min);
            let max = nums.iter().map(|r| r.v).fold(f64::NEG_INFINITY, f64::max);
            summaries.push(Summary {
                point: (*name).to_owned(),
                count: SAMPLES_PER_POINT as u64,
                errors: 0,
                first: nums.first().copied(),
                last: nums.last().copied(),
                min: Some(min),
                max: Some(max),
            });
            samples.push(PointSamples {
                point: (*name).to_owned(),
                samples: ss,
            });
        }
        let parts = 100_000 + i / 30 + d as u64 * 1_000;
        let counter = |role: &str, point: &str, v: u64| CounterReadings {
            role: role.to_owned(),
            point: point.to_owned(),
            width_bits: Some(32),
            rollover: None,
            readings: vec![Reading {
                t: to - d as i64,
                v: v as f64,
            }],
        };
        devices.push(DeviceData {
            id,
            template: "cnc-modbus-generic".to_owned(),
            samples,
            summaries,
            states: vec![StateSpan {
                from,
                to,
                state: if d % 5 == 0 {
                    State::Idle
                } else {
                    State::Producing
                },
            }],
            counters: vec![
                counter("produced", "part_count", parts),
                counter("good", "good_count", parts - parts / 50),
                counter("scrap", "scrap_count", parts / 50),
            ],
            links: Vec::new(),
            dropped: None,
        });
    }
    devices.sort_by(|a, b| a.id.cmp(&b.id));
    Contents { from, to, devices }
}

/// One measured run: batches, bytes, wall time of the measured calls, CPU.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    batches: u64,
    bytes: u64,
    wall: Duration,
    cpu_s: f64,
    /// Batches per second over the first and the last 10 % of the batches (per-batch runs).
    first_last: Option<(f64, f64)>,
}

impl Run {
    fn per_s(&self) -> f64 {
        self.batches as f64 / self.wall.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.wall.as_secs_f64()
    }
    fn cpu_ms_per_batch(&self) -> f64 {
        self.cpu_s * 1000.0 / self.batches.max(1) as f64
    }
    fn json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "batches": self.batches,
            "bytes": self.bytes,
            "seconds": round3(self.wall.as_secs_f64()),
            "batches_per_s": round3(self.per_s()),
            "mb_per_s": round3(self.mb_per_s()),
            "cpu_ms_per_batch": round3(self.cpu_ms_per_batch()),
        });
        if let Some((first, last)) = self.first_last {
            v["first_10pct_batches_per_s"] = round3(first).into();
            v["last_10pct_batches_per_s"] = round3(last).into();
        }
        v
    }
}

/// Batches per second over the first and the last tenth of per-batch durations.
fn first_last(times: &[Duration]) -> Option<(f64, f64)> {
    let k = times.len() / 10;
    if k == 0 {
        return None;
    }
    let rate = |d: &[Duration]| d.len() as f64 / d.iter().sum::<Duration>().as_secs_f64();
    Some((rate(&times[..k]), rate(&times[times.len() - k..])))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPU seconds spent building `n` contents alone (subtracted from the write runs).
fn build_cpu(n: u64) -> f64 {
    let c0 = cpu_seconds("self");
    let mut keep = 0usize;
    for i in 0..n {
        keep = keep.wrapping_add(std::hint::black_box(contents(i)).devices.len());
    }
    std::hint::black_box(keep);
    cpu_seconds("self") - c0
}

fn write_log(path: &Path, n: u64, build_cpu_s: f64) -> Run {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log");
    let mut run = Run::default();
    let mut times = Vec::with_capacity(n as usize);
    let c0 = cpu_seconds("self");
    for i in 0..n {
        let c = contents(i);
        let t = Instant::now();
        let mut json = serde_json::to_vec(&c).expect("encode");
        json.push(b'\n');
        f.write_all(&json).expect("append");
        f.sync_data().expect("fsync");
        times.push(t.elapsed());
        run.bytes += json.len() as u64 - 1;
        run.batches += 1;
    }
    run.cpu_s = cpu_seconds("self") - c0 - build_cpu_s;
    run.wall = times.iter().sum();
    run.first_last = first_last(&times);
    run
}

async fn open(path: PathBuf, fsync: Fsync) -> Outbox {
    Outbox::open(OutboxConfig {
        path,
        // Larger than an hour: this bench measures storage, not the budget policy.
        budget_bytes: 64 << 30,
        fsync,
    })
    .await
    .expect("open the outbox")
}

async fn push_hour(outbox: &Outbox, n: u64, build_cpu_s: f64) -> Run {
    let mut run = Run::default();
    let mut times = Vec::with_capacity(n as usize);
    let c0 = cpu_seconds("self");
    for i in 0..n {
        let c = contents(i);
        let t = Instant::now();
        outbox.push(&c).await.expect("push");
        times.push(t.elapsed());
        run.batches += 1;
    }
    run.cpu_s = cpu_seconds("self") - c0 - build_cpu_s;
    run.wall = times.iter().sum();
    run.first_last = first_last(&times);
    // Same bytes as the log (push stores serde_json::to_vec of the contents).
    run.bytes = outbox.stats().await.expect("stats").bytes;
    run
}

/// `seal_next` + `ack` until empty.
async fn drain(outbox: &Outbox, key: &SigningKey) -> Run {
    let mut run = Run::default();
    let mut times = Vec::new();
    let c0 = cpu_seconds("self");
    let t = Instant::now();
    let mut t_batch = Instant::now();
    while let Some(s) = outbox
        .seal_next(AGENT, key, T0 + 7_200_000)
        .await
        .expect("seal")
    {
        run.bytes += s.payload.len() as u64;
        outbox.ack(s.seq).await.expect("ack");
        run.batches += 1;
        times.push(t_batch.elapsed());
        t_batch = Instant::now();
    }
    run.wall = t.elapsed();
    run.cpu_s = cpu_seconds("self") - c0;
    run.first_last = first_last(&times);
    run
}

/// Decode each logged contents and seal it: signing and hashing, no storage.
fn seal_log(path: &Path, key: &SigningKey) -> Run {
    let text = std::fs::read(path).expect("read the log");
    let mut run = Run::default();
    let mut prev = batch::ZERO_HASH.to_owned();
    let c0 = cpu_seconds("self");
    let t = Instant::now();
    for (i, line) in text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let c: Contents = serde_json::from_slice(line).expect("decode");
        let s = batch::seal(c, AGENT, i as u64 + 1, &prev, T0 + 7_200_000, key).expect("seal");
        run.bytes += s.payload.len() as u64;
        prev = s.body_hash;
        run.batches += 1;
    }
    run.wall = t.elapsed();
    run.cpu_s = cpu_seconds("self") - c0;
    run
}

/// Reading the append-only log back, batch by batch (page cache warm, like the outbox's).
fn read_log(path: &Path) -> Run {
    let mut run = Run::default();
    let c0 = cpu_seconds("self");
    let t = Instant::now();
    let text = std::fs::read(path).expect("read the log");
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let v = std::hint::black_box(line.to_vec());
        run.bytes += v.len() as u64;
        run.batches += 1;
    }
    run.wall = t.elapsed();
    run.cpu_s = cpu_seconds("self") - c0;
    run
}

struct Replay {
    seal: Run,
    read: Run,
    ack: Run,
}

/// Seal every batch, read them all back through `unacked` pages, acknowledge them all.
async fn replay(outbox: &Outbox, key: &SigningKey) -> Replay {
    let mut seal = Run::default();
    let (c0, t) = (cpu_seconds("self"), Instant::now());
    let mut last = 0;
    while let Some(s) = outbox
        .seal_next(AGENT, key, T0 + 7_200_000)
        .await
        .expect("seal")
    {
        seal.bytes += s.payload.len() as u64;
        seal.batches += 1;
        last = s.seq;
    }
    seal.wall = t.elapsed();
    seal.cpu_s = cpu_seconds("self") - c0;

    let mut read = Run::default();
    let (c0, t) = (cpu_seconds("self"), Instant::now());
    let mut after = last - seal.batches;
    loop {
        let page = outbox.unacked(after, PAGE).await.expect("unacked");
        let Some(l) = page.last() else { break };
        after = l.seq;
        read.batches += page.len() as u64;
        read.bytes += page.iter().map(|s| s.payload.len() as u64).sum::<u64>();
    }
    read.wall = t.elapsed();
    read.cpu_s = cpu_seconds("self") - c0;

    let mut ack = Run::default();
    let (c0, t) = (cpu_seconds("self"), Instant::now());
    for seq in last + 1 - seal.batches..=last {
        outbox.ack(seq).await.expect("ack");
        ack.batches += 1;
    }
    ack.wall = t.elapsed();
    ack.cpu_s = cpu_seconds("self") - c0;
    Replay { seal, read, ack }
}

fn file_mb(paths: &[PathBuf]) -> f64 {
    paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() as f64)
        .sum::<f64>()
        / 1e6
}

pub(crate) fn main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let n: u64 = env_f64("SHOPFLOOR_BENCH_BATCHES")
        .map(|b| b as u64)
        .unwrap_or(if ctx.quick { 20 } else { 3_600 })
        .max(1);
    let dir = tempdir("shopfloor-bench-outbox")?;
    let key = SigningKey::from_bytes(&[7; 32]);
    let sample = contents(0);
    let encoded = serde_json::to_vec(&sample).expect("encode").len();
    let samples = sample.sample_count();
    let sealed_len = batch::seal(sample, AGENT, 1, batch::ZERO_HASH, T0, &key)
        .expect("seal")
        .payload
        .len();
    println!(
        "batch: {DEVICES} devices × {} points × {SAMPLES_PER_POINT} samples ({samples} raw samples), \
         summaries, 1 state span, 3 counters per device: contents {:.1} kB, sealed {:.1} kB",
        POINTS.len(),
        encoded as f64 / 1e3,
        sealed_len as f64 / 1e3,
    );
    println!(
        "one hour at 1 s = {n} batches, {:.0} MB of contents; {} cores; tempdir {}",
        encoded as f64 * n as f64 / 1e6,
        cores(),
        dir.path().display()
    );
    let build = build_cpu(n);

    let log = dir.path().join("baseline.log");
    let base_write = write_log(&log, n, build);
    let log_mb = file_mb(std::slice::from_ref(&log));
    let base_seal = seal_log(&log, &SigningKey::from_bytes(&[7; 32]));
    let base_read = read_log(&log);

    let rt = runtime(Some(2))?;
    let (full_write, full_mb, full_drain, normal_write, normal_mb, normal_drain, rep) = rt
        .block_on(async {
            let mut out = Vec::new();
            for (name, fsync) in [("full", Fsync::Full), ("normal", Fsync::Normal)] {
                let path = dir.path().join(format!("outbox-{name}.db"));
                let outbox = open(path.clone(), fsync).await;
                let w = push_hour(&outbox, n, build).await;
                let mb = file_mb(&[path.clone(), path.with_extension("db-wal")]);
                let d = drain(&outbox, &key).await;
                assert_eq!(d.batches, n, "drain did not empty the outbox");
                out.push((w, mb, d));
                outbox.close().await;
            }
            // Replay: a fresh hour, all sealed, read back in pages, acknowledged.
            let path = dir.path().join("outbox-replay.db");
            let outbox = open(path, Fsync::Normal).await;
            push_hour(&outbox, n, build).await;
            let rep = replay(&outbox, &key).await;
            assert_eq!(rep.read.batches, n, "replay did not read every batch");
            assert_eq!(outbox.stats().await.expect("stats").batches, 0);
            outbox.close().await;
            let (fw, fmb, fd) = out[0];
            let (nw, nmb, nd) = out[1];
            (fw, fmb, fd, nw, nmb, nd, rep)
        });

    println!();
    println!(
        "{:<44} {:>12} {:>10} {:>10} {:>12} {:>10}",
        "", "batches/s", "MB/s", "seconds", "CPU ms/batch", "vs base"
    );
    let row = |name: &str, r: &Run, base: Option<&Run>| {
        let ratio = base.map_or(String::new(), |b| format!("{:.2}×", r.per_s() / b.per_s()));
        let mb = if r.bytes > 0 {
            format!("{:.1}", r.mb_per_s())
        } else {
            "-".to_owned()
        };
        println!(
            "{name:<44} {:>12.1} {mb:>10} {:>10.2} {:>12.2} {:>10}",
            r.per_s(),
            r.wall.as_secs_f64(),
            r.cpu_ms_per_batch(),
            ratio
        );
    };
    row(
        "write: baseline log, write_all + sync_data",
        &base_write,
        None,
    );
    row(
        "write: outbox push, fsync = full",
        &full_write,
        Some(&base_write),
    );
    row(
        "write: outbox push, fsync = normal",
        &normal_write,
        Some(&base_write),
    );
    row(
        "seal: baseline, decode + seal, no storage",
        &base_seal,
        None,
    );
    row(
        "drain: seal_next + ack, fsync = full",
        &full_drain,
        Some(&base_seal),
    );
    row(
        "drain: seal_next + ack, fsync = normal",
        &normal_drain,
        Some(&base_seal),
    );
    row("replay: baseline, read the log back", &base_read, None);
    row(
        "replay: seal_next all, fsync = normal",
        &rep.seal,
        Some(&base_seal),
    );
    row(
        &format!("replay: unacked pages of {PAGE}"),
        &rep.read,
        Some(&base_read),
    );
    row("replay: ack all, fsync = normal", &rep.ack, None);
    println!();
    println!(
        "batches/s over the first and the last 10 % of the hour (does a backlog slow it down?):"
    );
    for (name, r) in [
        ("write: baseline log", &base_write),
        ("write: outbox push, fsync = full", &full_write),
        ("write: outbox push, fsync = normal", &normal_write),
        ("drain: seal_next + ack, fsync = full", &full_drain),
        ("drain: seal_next + ack, fsync = normal", &normal_drain),
    ] {
        if let Some((first, last)) = r.first_last {
            println!(
                "{name:<44} {first:>12.1} {last:>10.1} {:>9.2}×",
                last / first
            );
        }
    }
    println!();
    println!(
        "on disk after the hour: log {log_mb:.0} MB, outbox full {full_mb:.0} MB, normal {normal_mb:.0} MB (db + wal)"
    );
    println!(
        "one hour of backlog drains in {:.1} s (fsync full) / {:.1} s (normal): {:.0}× / {:.0}× faster than it was produced",
        full_drain.wall.as_secs_f64(),
        normal_drain.wall.as_secs_f64(),
        n as f64 / full_drain.wall.as_secs_f64(),
        n as f64 / normal_drain.wall.as_secs_f64(),
    );
    let line = serde_json::json!({
        "bench": "outbox",
        "batches": n,
        "devices": DEVICES,
        "points_per_device": POINTS.len(),
        "samples_per_batch": samples,
        "contents_bytes": encoded,
        "sealed_bytes": sealed_len,
        "cores": cores(),
        "write_baseline": base_write.json(),
        "write_full": full_write.json(),
        "write_normal": normal_write.json(),
        "write_full_vs_baseline": round3(full_write.per_s() / base_write.per_s()),
        "write_normal_vs_baseline": round3(normal_write.per_s() / base_write.per_s()),
        "seal_baseline": base_seal.json(),
        "drain_full": full_drain.json(),
        "drain_normal": normal_drain.json(),
        "drain_full_vs_seal_baseline": round3(full_drain.per_s() / base_seal.per_s()),
        "drain_normal_vs_seal_baseline": round3(normal_drain.per_s() / base_seal.per_s()),
        "replay_baseline_read": base_read.json(),
        "replay_seal_normal": rep.seal.json(),
        "replay_unacked_read": rep.read.json(),
        "replay_ack_normal": rep.ack.json(),
        "replay_read_vs_baseline": round3(rep.read.per_s() / base_read.per_s()),
        "disk_mb": {"log": round3(log_mb), "outbox_full": round3(full_mb), "outbox_normal": round3(normal_mb)},
    });
    println!("{line}");

    let mut figures = Vec::new();
    let mut rate = |name: &str, r: &Run, base: Option<&Run>| {
        let mut f = Figure::new(SCENARIO, name, r.per_s(), "batches/s");
        if let Some(b) = base {
            f = f.baseline(b.per_s());
        }
        figures.push(f);
    };
    rate(
        "write: outbox push, fsync = full",
        &full_write,
        Some(&base_write),
    );
    rate(
        "write: outbox push, fsync = normal",
        &normal_write,
        Some(&base_write),
    );
    rate(
        "drain: seal_next + ack, fsync = full",
        &full_drain,
        Some(&base_seal),
    );
    rate(
        "drain: seal_next + ack, fsync = normal",
        &normal_drain,
        Some(&base_seal),
    );
    rate(
        "replay: seal_next all, fsync = normal",
        &rep.seal,
        Some(&base_seal),
    );
    rate(
        &format!("replay: unacked pages of {PAGE}"),
        &rep.read,
        Some(&base_read),
    );
    rate("replay: ack all, fsync = normal", &rep.ack, None);
    let mut cpu = |name: &str, r: &Run, base: &Run| {
        figures.push(
            Figure::new(SCENARIO, name, r.cpu_ms_per_batch(), "ms")
                .baseline(base.cpu_ms_per_batch()),
        );
    };
    cpu(
        "write: CPU per batch, fsync = full",
        &full_write,
        &base_write,
    );
    cpu(
        "drain: CPU per batch, fsync = full",
        &full_drain,
        &base_seal,
    );
    figures.push(
        Figure::new(
            SCENARIO,
            "drain: seconds for the backlog, fsync = full",
            full_drain.wall.as_secs_f64(),
            "s",
        )
        .baseline(base_seal.wall.as_secs_f64())
        .note(format!(
            "{n} batches; baseline: decode + seal without storage"
        )),
    );
    for (name, r) in [
        ("write: last / first 10 % rate, fsync = full", &full_write),
        ("drain: last / first 10 % rate, fsync = full", &full_drain),
    ] {
        if let (Some((first, last)), Some((bf, bl))) = (r.first_last, base_write.first_last) {
            let mut f = Figure::new(SCENARIO, name, last / first, "×");
            if name.starts_with("write") {
                f = f.baseline(bl / bf);
            }
            figures.push(f);
        }
    }
    figures.push(
        Figure::new(
            SCENARIO,
            "on disk: outbox (db + wal), fsync = full",
            full_mb,
            "MB",
        )
        .baseline(log_mb),
    );
    Ok(figures)
}
