//! Roll-ups: dirty ranges → minute, hour, day and month buckets of every device
//! (docs/GATEWAY.md, "Roll-ups and evidence").
//!
//! Invariants:
//! - every bucket is **recomputed whole**, never incremented: minutes from the raw rows
//!   ([`Store::raw_slice`]), hours from their minutes, days from their hours, months from their
//!   days. Late data only queues new dirty ranges; the buckets they touch are recomputed, all
//!   others stay as they are. Running a pass twice writes the same rows.
//! - minute and hour buckets start at multiples of 60 000 / 3 600 000 ms; day and month buckets
//!   start at local midnight (first of the month) in the gateway's time zone.
//! - states: milliseconds per state of the intervals clipped to the bucket `[start, end)`; an
//!   explicit `offline` interval counts in `offline`; time no interval covers is in no field (it
//!   is offline by the engine's rule). Overlapping intervals (which a correct agent never sends)
//!   are counted once, the earlier-starting one winning, so a bucket never holds more time than
//!   its length.
//! - counters and meters: a delta belongs to the bucket of its later reading with the engine's
//!   half-open attribution `(start, end]` (docs/ENGINE.md §2.4 rule 4), computed by
//!   [`shopfloor_core::counter::Deltas`] itself, so wraps and resets are decided exactly as
//!   `calc` decides them. A bucket's row is per (device, role): the deltas of all its points,
//!   the first and last reading time in `(start, end]`, the readings, wraps and resets.
//!   Because a reading's delta depends on the reading before it, the minute of the first
//!   reading after a dirty range is recomputed with it.
//! - activity: samples, state intervals and readings in `[start, end)` and the distinct points
//!   that delivered them (coarser buckets: sums, and the maximum of `points`).
//! - one pass is one [`Store::apply_rollups`]: the buckets, the `cleared` ranges (so a bucket
//!   that lost its data disappears) and the dirty entries done commit together.
//! - only the holder of the lease [`LEASE`] works, so replicas sharing one PostgreSQL never
//!   race: the lease is renewed during a pass, and a pass whose lease was lost is dropped
//!   before its write commits (were two passes ever to overlap, both compute the same rows).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use shopfloor_core::counter::Deltas;
use shopfloor_core::evidence::{Reading, Register};
use shopfloor_store::{
    ActivityBucket, CounterBucket, DirtyEntry, Gran, Ms, RawSlice, ReadingRow, RollupUpdate,
    StateBucket, Store, StoreError,
};
use tokio::sync::watch;

use crate::db::Db;
use crate::metrics::Metrics;

pub const MINUTE: Ms = 60_000;
pub const HOUR: Ms = 3_600_000;

/// Name of the roll-up lease.
pub const LEASE: &str = "rollup";
/// How long a taken lease lasts; the worker renews it before every pass and every [`RENEW`]
/// during one.
const LEASE_MS: Ms = 20_000;
const RENEW: Duration = Duration::from_secs(5);
/// Pause between passes when nothing (or little) is waiting.
const IDLE: Duration = Duration::from_secs(2);
/// Dirty entries taken per pass.
pub const DIRTY_LIMIT: i64 = 1_000;
/// Longest raw slice read at once (a long backfill range is read in chunks).
const SLICE_MS: Ms = 6 * HOUR;

// ---------------------------------------------------------------------------------------------
// Time arithmetic.

/// Start of the minute containing `t`.
pub fn floor_minute(t: Ms) -> Ms {
    t.div_euclid(MINUTE) * MINUTE
}

/// The smallest minute boundary ≥ `t`.
pub fn ceil_minute(t: Ms) -> Ms {
    floor_minute(t.saturating_add(MINUTE - 1))
}

pub fn floor_hour(t: Ms) -> Ms {
    t.div_euclid(HOUR) * HOUR
}

/// Start of the minute bucket a reading at `t` is attributed to: the bucket `(m, m + 1 min]`
/// that contains it (a reading exactly on a boundary belongs to the minute before).
pub fn reading_minute(t: Ms) -> Ms {
    floor_minute(t.saturating_sub(1))
}

fn zoned(t: Ms, tz: &TimeZone) -> Option<jiff::Zoned> {
    Timestamp::from_millisecond(t)
        .ok()
        .map(|ts| ts.to_zoned(tz.clone()))
}

fn date_start(d: jiff::civil::Date, tz: &TimeZone) -> Option<Ms> {
    let z = d.to_zoned(tz.clone()).ok()?.start_of_day().ok()?;
    Some(z.timestamp().as_millisecond())
}

/// Local midnight at or before `t` in `tz`.
pub fn day_start(t: Ms, tz: &TimeZone) -> Option<Ms> {
    date_start(zoned(t, tz)?.date(), tz)
}

/// The first local midnight after `t`.
pub fn next_day_start(t: Ms, tz: &TimeZone) -> Option<Ms> {
    date_start(zoned(t, tz)?.date().tomorrow().ok()?, tz)
}

/// Local midnight of the first day of the month containing `t`.
pub fn month_start(t: Ms, tz: &TimeZone) -> Option<Ms> {
    date_start(zoned(t, tz)?.date().first_of_month(), tz)
}

/// Local midnight of the first day of the next month.
pub fn next_month_start(t: Ms, tz: &TimeZone) -> Option<Ms> {
    let first = zoned(t, tz)?.date().first_of_month();
    date_start(first.checked_add(1.month()).ok()?, tz)
}

/// The instant of `t` ms (for the engine's types).
pub fn ts(t: Ms) -> Option<Timestamp> {
    Timestamp::from_millisecond(t).ok()
}

/// One whole bucket of a tiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tile {
    pub gran: Gran,
    pub start: Ms,
    pub end: Ms,
}

/// Tiles `[from, to)` (minute-aligned) with the coarsest whole buckets up to `coarsest`:
/// months where a whole local month fits, then days, hours, and minutes at the edges. Hours
/// never cross a local midnight (zones whose midnight is not on a whole UTC hour get minutes
/// there). Errors name the instant that is out of range.
pub fn tile(from: Ms, to: Ms, tz: &TimeZone, coarsest: Gran) -> Result<Vec<Tile>, String> {
    if from % MINUTE != 0 || to % MINUTE != 0 {
        return Err(format!("[{from}, {to}) is not minute-aligned"));
    }
    let out_of_range = |t: Ms| format!("instant {t} ms is out of range");
    let mut out = Vec::new();
    let mut c = from;
    while c < to {
        if coarsest >= Gran::Month && month_start(c, tz) == Some(c) {
            let e = next_month_start(c, tz).ok_or_else(|| out_of_range(c))?;
            if e <= to {
                out.push(Tile {
                    gran: Gran::Month,
                    start: c,
                    end: e,
                });
                c = e;
                continue;
            }
        }
        let next_day = next_day_start(c, tz).ok_or_else(|| out_of_range(c))?;
        if coarsest >= Gran::Day && day_start(c, tz) == Some(c) && next_day <= to {
            out.push(Tile {
                gran: Gran::Day,
                start: c,
                end: next_day,
            });
            c = next_day;
            continue;
        }
        if coarsest >= Gran::Hour && c % HOUR == 0 && c + HOUR <= to && c + HOUR <= next_day {
            out.push(Tile {
                gran: Gran::Hour,
                start: c,
                end: c + HOUR,
            });
            c += HOUR;
            continue;
        }
        out.push(Tile {
            gran: Gran::Minute,
            start: c,
            end: c + MINUTE,
        });
        c += MINUTE;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Pure bucket math.

/// Bucket rows of one or more devices, keyed for overlays and comparisons.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Buckets {
    /// (device, gran, start) → row.
    pub states: BTreeMap<(String, Gran, Ms), StateBucket>,
    /// (device, gran, start, role) → row.
    pub counters: BTreeMap<(String, Gran, Ms, String), CounterBucket>,
    pub activity: BTreeMap<(String, Gran, Ms), ActivityBucket>,
}

impl Buckets {
    pub fn is_empty(&self) -> bool {
        self.states.is_empty() && self.counters.is_empty() && self.activity.is_empty()
    }

    pub fn len(&self) -> usize {
        self.states.len() + self.counters.len() + self.activity.len()
    }

    pub fn from_rows(
        states: Vec<StateBucket>,
        counters: Vec<CounterBucket>,
        activity: Vec<ActivityBucket>,
    ) -> Buckets {
        let mut b = Buckets::default();
        for s in states {
            b.states.insert((s.device.clone(), s.gran, s.bucket), s);
        }
        for c in counters {
            b.counters
                .insert((c.device.clone(), c.gran, c.bucket, c.role.clone()), c);
        }
        for a in activity {
            b.activity.insert((a.device.clone(), a.gran, a.bucket), a);
        }
        b
    }

    /// Moves every row of `other` in, replacing rows with the same key.
    pub fn extend(&mut self, other: Buckets) {
        self.states.extend(other.states);
        self.counters.extend(other.counters);
        self.activity.extend(other.activity);
    }

    /// Removes the rows of `device` and `gran` whose start lies in `[from, to)`.
    pub fn remove_range(&mut self, device: &str, gran: Gran, from: Ms, to: Ms) {
        if from >= to {
            return;
        }
        let d = device.to_owned();
        let keys: Vec<_> = self
            .states
            .range((d.clone(), gran, from)..(d.clone(), gran, to))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.states.remove(&k);
        }
        let keys: Vec<_> = self
            .counters
            .range((d.clone(), gran, from, String::new())..(d.clone(), gran, to, String::new()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.counters.remove(&k);
        }
        let keys: Vec<_> = self
            .activity
            .range((d.clone(), gran, from)..(d, gran, to))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.activity.remove(&k);
        }
    }

    /// The rows of `device` and `gran` whose start lies in `[from, to)`.
    pub fn range(&self, device: &str, gran: Gran, from: Ms, to: Ms) -> Buckets {
        let mut out = Buckets::default();
        if from >= to {
            return out;
        }
        let d = device.to_owned();
        for (k, v) in self
            .states
            .range((d.clone(), gran, from)..(d.clone(), gran, to))
        {
            out.states.insert(k.clone(), v.clone());
        }
        for (k, v) in self
            .counters
            .range((d.clone(), gran, from, String::new())..(d.clone(), gran, to, String::new()))
        {
            out.counters.insert(k.clone(), v.clone());
        }
        for (k, v) in self.activity.range((d.clone(), gran, from)..(d, gran, to)) {
            out.activity.insert(k.clone(), v.clone());
        }
        out
    }

    fn into_update(self, update: &mut RollupUpdate) {
        update.states.extend(self.states.into_values());
        update.counters.extend(self.counters.into_values());
        update.activity.extend(self.activity.into_values());
    }
}

const STATES: [&str; 6] = [
    "producing",
    "setup",
    "delay",
    "idle",
    "planned_down",
    "offline",
];

fn state_index(s: &str) -> Option<usize> {
    STATES.iter().position(|x| *x == s)
}

fn state_row(device: &str, gran: Gran, bucket: Ms, ms: [i64; 6]) -> StateBucket {
    StateBucket {
        device: device.to_owned(),
        gran,
        bucket,
        producing: ms[0],
        setup: ms[1],
        delay: ms[2],
        idle: ms[3],
        planned_down: ms[4],
        offline: ms[5],
    }
}

/// Milliseconds per state of a bucket, in the order producing, setup, delay, idle,
/// planned_down, offline.
pub fn state_fields(b: &StateBucket) -> [i64; 6] {
    [
        b.producing,
        b.setup,
        b.delay,
        b.idle,
        b.planned_down,
        b.offline,
    ]
}

/// The minute buckets of `device` for the minute-aligned range `[from, to)`, from a raw slice
/// with the store's semantics (states overlapping the range; readings in it plus, per point, the
/// last one before and the first one at or after it). Activity per minute: samples and link
/// events (the slice's `activity`), readings, and non-offline state intervals per minute they
/// overlap; `points` are the distinct sample and reading points.
pub fn minute_buckets(device: &str, slice: &RawSlice, from: Ms, to: Ms) -> Buckets {
    let mut out = Buckets::default();
    let gran = Gran::Minute;
    let mut activity: BTreeMap<Ms, (i64, BTreeSet<&str>)> = BTreeMap::new();

    // States, clipped to each minute; an interval starting under the cursor is clipped to it.
    let mut states: Vec<_> = slice
        .states
        .iter()
        .filter(|s| s.to > s.from && s.to > from && s.from < to)
        .collect();
    states.sort_by_key(|s| (s.from, s.to));
    let mut per_minute: BTreeMap<Ms, [i64; 6]> = BTreeMap::new();
    let mut cursor = from;
    for s in states {
        let a = s.from.max(cursor);
        let b = s.to.min(to);
        cursor = cursor.max(b);
        if a >= b {
            continue;
        }
        let idx = state_index(&s.state);
        let mut m = floor_minute(a);
        while m < b {
            let seg = b.min(m + MINUTE) - a.max(m);
            if let Some(i) = idx {
                per_minute.entry(m).or_default()[i] += seg;
                if i != 5 {
                    activity.entry(m).or_default().0 += 1;
                }
            }
            m += MINUTE;
        }
    }
    for (m, ms) in per_minute {
        if ms.iter().any(|&x| x > 0) {
            out.states
                .insert((device.to_owned(), gran, m), state_row(device, gran, m, ms));
        }
    }

    for a in &slice.activity {
        if a.minute >= from && a.minute < to {
            let e = activity.entry(a.minute).or_default();
            e.0 += a.count;
            if !a.point.is_empty() {
                e.1.insert(&a.point);
            }
        }
    }

    // Readings, grouped by (role, point), deduplicated like the engine (same instant: the
    // smaller value).
    let mut groups: BTreeMap<(&str, &str), Vec<&ReadingRow>> = BTreeMap::new();
    for r in &slice.readings {
        groups.entry((&r.role, &r.point)).or_default().push(r);
        if r.t >= from && r.t < to {
            let e = activity.entry(floor_minute(r.t)).or_default();
            e.0 += 1;
            e.1.insert(&r.point);
        }
    }
    for ((role, _point), mut rows) in groups {
        rows.sort_by(|a, b| a.t.cmp(&b.t).then(a.v.total_cmp(&b.v)));
        rows.dedup_by(|b, a| a.t == b.t);
        let width_bits = rows
            .iter()
            .rev()
            .find_map(|r| r.width_bits)
            .and_then(|w| u8::try_from(w).ok());
        let rollover = rows.iter().rev().find_map(|r| r.rollover);
        let mut i = 0;
        while i < rows.len() {
            let t = rows[i].t;
            if t <= from || t > to {
                i += 1;
                continue;
            }
            let m = reading_minute(t);
            let mut j = i;
            while j < rows.len() && rows[j].t <= m + MINUTE {
                j += 1;
            }
            let mut rs: Vec<Reading> = Vec::with_capacity(j - i + 1);
            let window = i.checked_sub(1).map_or(i, |p| p);
            for r in &rows[window..j] {
                if let Some(at) = ts(r.t) {
                    rs.push(Reading { at, value: r.v });
                }
            }
            let d = Deltas::new(Register {
                readings: &rs,
                width_bits,
                rollover,
                replaced_at: &[],
            });
            let delta = match (ts(m), ts(m + MINUTE)) {
                (Some(a), Some(b)) => d.attributed(a, b).value.unwrap_or(0.0),
                _ => 0.0,
            };
            let n = i64::try_from(j - i).unwrap_or(i64::MAX);
            let key = (device.to_owned(), gran, m, role.to_owned());
            let row = out.counters.entry(key).or_insert_with(|| CounterBucket {
                device: device.to_owned(),
                role: role.to_owned(),
                gran,
                bucket: m,
                delta: 0.0,
                first_t: rows[i].t,
                last_t: rows[j - 1].t,
                readings: 0,
                wraps: 0,
                resets: 0,
            });
            row.delta += delta;
            row.first_t = row.first_t.min(rows[i].t);
            row.last_t = row.last_t.max(rows[j - 1].t);
            row.readings += n;
            row.wraps += i64::from(d.wraps);
            row.resets += i64::from(d.resets);
            i = j;
        }
    }

    for (m, (samples, points)) in activity {
        out.activity.insert(
            (device.to_owned(), gran, m),
            ActivityBucket {
                device: device.to_owned(),
                gran,
                bucket: m,
                samples,
                points: i64::try_from(points.len()).unwrap_or(i64::MAX),
            },
        );
    }
    out
}

/// The minutes after `to` whose counter deltas depend on readings before `to`: per (role,
/// point), the minute of the first reading after `to` in the slice (a reading exactly at `to`
/// already belongs to the range's last minute).
pub fn follow_minutes(slice: &RawSlice, to: Ms) -> BTreeSet<Ms> {
    let mut first: BTreeMap<(&str, &str), Ms> = BTreeMap::new();
    for r in slice.readings.iter().filter(|r| r.t >= to) {
        let e = first.entry((&r.role, &r.point)).or_insert(r.t);
        *e = (*e).min(r.t);
    }
    first
        .into_values()
        .filter(|&t| t > to)
        .map(reading_minute)
        .collect()
}

/// One bucket of `gran` starting at `bucket` from the rows of its parts (any finer
/// granularity): states and activity summed (`points`: the maximum), counters per role summed
/// with the earliest `first_t` and the latest `last_t`.
pub fn aggregate(device: &str, gran: Gran, bucket: Ms, parts: &Buckets) -> Buckets {
    let mut out = Buckets::default();
    let mut ms = [0i64; 6];
    for s in parts.states.values().filter(|s| s.device == device) {
        for (acc, v) in ms.iter_mut().zip(state_fields(s)) {
            *acc += v;
        }
    }
    if ms.iter().any(|&x| x > 0) {
        out.states.insert(
            (device.to_owned(), gran, bucket),
            state_row(device, gran, bucket, ms),
        );
    }
    for c in parts.counters.values().filter(|c| c.device == device) {
        let key = (device.to_owned(), gran, bucket, c.role.clone());
        let row = out.counters.entry(key).or_insert_with(|| CounterBucket {
            device: device.to_owned(),
            role: c.role.clone(),
            gran,
            bucket,
            delta: 0.0,
            first_t: c.first_t,
            last_t: c.last_t,
            readings: 0,
            wraps: 0,
            resets: 0,
        });
        row.delta += c.delta;
        row.first_t = row.first_t.min(c.first_t);
        row.last_t = row.last_t.max(c.last_t);
        row.readings += c.readings;
        row.wraps += c.wraps;
        row.resets += c.resets;
    }
    let mut act: Option<ActivityBucket> = None;
    for a in parts.activity.values().filter(|a| a.device == device) {
        let row = act.get_or_insert_with(|| ActivityBucket {
            device: device.to_owned(),
            gran,
            bucket,
            samples: 0,
            points: 0,
        });
        row.samples += a.samples;
        row.points = row.points.max(a.points);
    }
    if let Some(a) = act {
        out.activity.insert((device.to_owned(), gran, bucket), a);
    }
    out
}

/// Whether a stored coarse bucket is exactly the aggregate of the stored parts in its range,
/// judged by the integers (state milliseconds, readings, wraps, resets, samples). A mismatch
/// means parts were purged (retention) or written by someone else: the caller then recomputes
/// the parts from raw instead of trusting them.
pub fn consistent(device: &str, gran: Gran, bucket: Ms, stored: &Buckets, parts: &Buckets) -> bool {
    let agg = aggregate(device, gran, bucket, parts);
    let st = |b: &Buckets| {
        b.states
            .get(&(device.to_owned(), gran, bucket))
            .map(state_fields)
            .unwrap_or_default()
    };
    let counters = |b: &Buckets| -> BTreeMap<String, (i64, i64, i64)> {
        b.counters
            .values()
            .filter(|c| c.device == device && c.gran == gran && c.bucket == bucket)
            .map(|c| (c.role.clone(), (c.readings, c.wraps, c.resets)))
            .collect()
    };
    let samples = |b: &Buckets| {
        b.activity
            .get(&(device.to_owned(), gran, bucket))
            .map_or(0, |a| a.samples)
    };
    st(stored) == st(&agg) && counters(stored) == counters(&agg) && samples(stored) == samples(&agg)
}

/// Aligns dirty ranges to whole minutes (so that the minute of a reading on the range's start,
/// attributed to the minute before, is included) and merges overlapping or touching ones.
pub fn plan_minutes(ranges: &[(Ms, Ms)]) -> Vec<(Ms, Ms)> {
    let mut aligned: Vec<(Ms, Ms)> = ranges
        .iter()
        .map(|&(a, b)| {
            let (a, b) = (a.min(b), a.max(b));
            let start = reading_minute(a);
            (start, ceil_minute(b).max(start + MINUTE))
        })
        .collect();
    merge(&mut aligned);
    aligned
}

/// Sorts and merges overlapping or touching ranges in place.
pub fn merge(ranges: &mut Vec<(Ms, Ms)>) {
    ranges.sort_unstable();
    let mut out: Vec<(Ms, Ms)> = Vec::with_capacity(ranges.len());
    for &(a, b) in ranges.iter() {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    *ranges = out;
}

fn covered(ranges: &[(Ms, Ms)], t: Ms) -> bool {
    ranges.iter().any(|&(a, b)| a <= t && t < b)
}

// ---------------------------------------------------------------------------------------------
// One pass.

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pass {
    /// Dirty entries waiting when the pass started (at most the limit) and done by it.
    pub ranges: usize,
    /// Bucket rows written.
    pub buckets: u64,
    /// Seconds spent in store calls.
    pub db_seconds: f64,
    /// The pass took as many entries as allowed: more are probably waiting.
    pub full: bool,
}

/// Store calls of a pass, timed.
struct Timed<'a> {
    db: &'a Db,
    spent: Duration,
}

impl Timed<'_> {
    async fn run<T>(
        &mut self,
        f: impl std::future::Future<Output = shopfloor_store::Result<T>>,
    ) -> shopfloor_store::Result<T> {
        let t0 = Instant::now();
        let r = f.await;
        self.spent += t0.elapsed();
        r
    }
}

/// Everything recomputed for one device in a pass, per granularity: the fresh rows and the
/// ranges of bucket starts they replace.
#[derive(Debug, Default)]
struct DeviceWork {
    fresh: Buckets,
    cleared: BTreeMap<Gran, Vec<(Ms, Ms)>>,
}

impl DeviceWork {
    fn clear(&mut self, gran: Gran, from: Ms, to: Ms) {
        let v = self.cleared.entry(gran).or_default();
        v.push((from, to));
        merge(v);
    }

    /// Stored rows overlaid with the fresh ones: stored rows in cleared ranges are dropped.
    fn overlay(&self, device: &str, gran: Gran, stored: Buckets, from: Ms, to: Ms) -> Buckets {
        let mut out = stored;
        if let Some(cleared) = self.cleared.get(&gran) {
            for &(a, b) in cleared {
                if a < to && b > from {
                    out.remove_range(device, gran, a.max(from), b.min(to));
                }
            }
        }
        out.extend(self.fresh.range(device, gran, from, to));
        out
    }
}

async fn stored(
    t: &mut Timed<'_>,
    device: &str,
    gran: Gran,
    from: Ms,
    to: Ms,
) -> shopfloor_store::Result<Buckets> {
    let (s, c, a) = t.run(t.db.device_buckets(device, gran, from, to)).await?;
    Ok(Buckets::from_rows(s, c, a))
}

/// Minute buckets of `[from, to)` from raw, one slice per chunk.
async fn minutes_from_raw(
    t: &mut Timed<'_>,
    device: &str,
    from: Ms,
    to: Ms,
    follow: &mut BTreeSet<Ms>,
) -> shopfloor_store::Result<Buckets> {
    let mut out = Buckets::default();
    let mut a = from;
    while a < to {
        let b = (a + SLICE_MS).min(to);
        let slice = t.run(t.db.raw_slice(device, a, b)).await?;
        if b == to {
            follow.extend(follow_minutes(&slice, to));
        }
        out.extend(minute_buckets(device, &slice, a, b));
        a = b;
    }
    Ok(out)
}

fn bad_time(t: Ms) -> StoreError {
    StoreError::Corrupt(format!("instant {t} ms is out of the supported range"))
}

/// Recomputes every bucket touched by the minute ranges of one device.
async fn device_pass(
    t: &mut Timed<'_>,
    tz: &TimeZone,
    device: &str,
    ranges: &[(Ms, Ms)],
) -> shopfloor_store::Result<DeviceWork> {
    let mut work = DeviceWork::default();
    let mut minutes: Vec<(Ms, Ms)> = ranges.to_vec();
    let mut follow = BTreeSet::new();
    for &(a, b) in ranges {
        let rows = minutes_from_raw(t, device, a, b, &mut follow).await?;
        work.fresh.extend(rows);
    }
    for m in follow {
        if !covered(&minutes, m) {
            let rows = minutes_from_raw(t, device, m, m + MINUTE, &mut BTreeSet::new()).await?;
            work.fresh.extend(rows);
            minutes.push((m, m + MINUTE));
        }
    }
    merge(&mut minutes);
    for &(a, b) in &minutes {
        work.clear(Gran::Minute, a, b);
    }

    // Hours from minutes; an hour whose stored minutes do not add up to the stored hour (purged
    // minutes) gets all its minutes recomputed from raw first.
    let mut hours: Vec<(Ms, Ms)> = minutes
        .iter()
        .map(|&(a, b)| (floor_hour(a), floor_hour(b - 1) + HOUR))
        .collect();
    merge(&mut hours);
    for &(h1, h2) in &hours {
        let old_minutes = stored(t, device, Gran::Minute, h1, h2).await?;
        let old_hours = stored(t, device, Gran::Hour, h1, h2).await?;
        let mut h = h1;
        while h < h2 {
            let parts = old_minutes.range(device, Gran::Minute, h, h + HOUR);
            if !consistent(device, Gran::Hour, h, &old_hours, &parts) {
                let rows = minutes_from_raw(t, device, h, h + HOUR, &mut BTreeSet::new()).await?;
                work.fresh.remove_range(device, Gran::Minute, h, h + HOUR);
                work.fresh.extend(rows);
                work.clear(Gran::Minute, h, h + HOUR);
            }
            let parts = work.overlay(device, Gran::Minute, parts, h, h + HOUR);
            work.fresh.extend(aggregate(device, Gran::Hour, h, &parts));
            h += HOUR;
        }
        work.clear(Gran::Hour, h1, h2);
    }

    // Days from hours (and minutes where a local midnight is not on a whole hour): every day
    // with a recomputed minute.
    let recomputed = work.cleared.get(&Gran::Minute).cloned().unwrap_or_default();
    let mut days: BTreeSet<(Ms, Ms)> = BTreeSet::new();
    for &(a, b) in &recomputed {
        let mut d = day_start(a, tz).ok_or_else(|| bad_time(a))?;
        while d < b {
            let e = next_day_start(d, tz).ok_or_else(|| bad_time(d))?;
            days.insert((d, e));
            d = e;
        }
    }
    for &(d, e) in &days {
        let tiles = tile(d, e, tz, Gran::Hour).map_err(StoreError::Corrupt)?;
        let mut parts = Buckets::default();
        for run in runs(&tiles) {
            let old = stored(t, device, run.gran, run.start, run.end).await?;
            parts.extend(work.overlay(device, run.gran, old, run.start, run.end));
        }
        work.fresh.extend(aggregate(device, Gran::Day, d, &parts));
        work.clear(Gran::Day, d, e);
    }

    // Months from days.
    let mut months: BTreeSet<(Ms, Ms)> = BTreeSet::new();
    for &(d, _) in &days {
        let m = month_start(d, tz).ok_or_else(|| bad_time(d))?;
        let e = next_month_start(d, tz).ok_or_else(|| bad_time(d))?;
        months.insert((m, e));
    }
    for &(m, e) in &months {
        let old = stored(t, device, Gran::Day, m, e).await?;
        let parts = work.overlay(device, Gran::Day, old, m, e);
        work.fresh.extend(aggregate(device, Gran::Month, m, &parts));
        work.clear(Gran::Month, m, e);
    }
    Ok(work)
}

/// Contiguous runs of tiles of one granularity (one store read each).
pub fn runs(tiles: &[Tile]) -> Vec<Tile> {
    let mut out: Vec<Tile> = Vec::new();
    for t in tiles {
        match out.last_mut() {
            Some(last) if last.gran == t.gran && last.end == t.start => last.end = t.end,
            _ => out.push(*t),
        }
    }
    out
}

/// One pass: takes up to `limit` dirty entries, recomputes the buckets they touch and writes
/// them with the entries done in one [`Store::apply_rollups`]. Used by [`run`] and the tests.
pub async fn run_once(db: &Db, tz: &TimeZone, limit: i64) -> Result<Pass, StoreError> {
    let mut t = Timed {
        db,
        spent: Duration::ZERO,
    };
    let entries: Vec<DirtyEntry> = t.run(db.dirty(limit)).await?;
    if entries.is_empty() {
        return Ok(Pass {
            db_seconds: t.spent.as_secs_f64(),
            ..Pass::default()
        });
    }
    let full = i64::try_from(entries.len()).unwrap_or(i64::MAX) >= limit;
    let mut by_device: BTreeMap<String, Vec<(Ms, Ms)>> = BTreeMap::new();
    let mut update = RollupUpdate::default();
    for e in &entries {
        update.done.push(e.id);
        by_device
            .entry(e.range.device.clone())
            .or_default()
            .push((e.range.from, e.range.to));
    }
    for (device, ranges) in by_device {
        let ranges = plan_minutes(&ranges);
        let work = match device_pass(&mut t, tz, &device, &ranges).await {
            Ok(w) => w,
            // Times the calendar cannot place (ingest refuses them, so this is stored data
            // from elsewhere): these ranges can never be rolled up; retrying them would
            // block the queue. Their entries are dropped, loudly.
            Err(StoreError::Corrupt(reason)) => {
                tracing::error!(device = %device, %reason, "dirty ranges dropped: cannot roll up");
                continue;
            }
            Err(e) => return Err(e),
        };
        for (gran, cleared) in work.cleared {
            for (a, b) in cleared {
                update.cleared.push((device.clone(), gran, a, b));
            }
        }
        work.fresh.into_update(&mut update);
    }
    let written = update.states.len() + update.counters.len() + update.activity.len();
    t.run(db.apply_rollups(&update)).await?;
    Ok(Pass {
        ranges: entries.len(),
        buckets: u64::try_from(written).unwrap_or(u64::MAX),
        db_seconds: t.spent.as_secs_f64(),
        full,
    })
}

/// Renews the lease every [`RENEW`] while a pass runs; returns when another holder has it.
async fn keep_lease(db: &Db, holder: &str) {
    loop {
        tokio::time::sleep(RENEW).await;
        let now = now_ms();
        match db.lease(LEASE, holder, now, now + LEASE_MS).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "roll-up lease: store error while renewing"),
        }
    }
}

fn now_ms() -> Ms {
    Timestamp::now().as_millisecond()
}

/// The roll-up worker: takes or renews the lease [`LEASE`] for `holder` before every pass (and
/// every few seconds during one) and works only while it holds it; passes follow each other
/// at once while entries keep coming in full batches, else every 2 s. Store errors are
/// logged and retried on the next tick. Returns when `shutdown` turns true (or its sender is
/// dropped).
pub async fn run(
    db: Db,
    metrics: Arc<Metrics>,
    holder: String,
    tz: TimeZone,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = now_ms();
        let mut again = false;
        match db.lease(LEASE, &holder, now, now + LEASE_MS).await {
            Ok(true) => {
                if !held {
                    tracing::info!(holder = %holder, "roll-up lease taken");
                    held = true;
                }
                // The lease is renewed during a long pass; if it is lost anyway the pass is
                // dropped before its single write commits (a dropped transaction rolls back).
                tokio::select! {
                    r = run_once(&db, &tz, DIRTY_LIMIT) => match r {
                        Ok(pass) => {
                            metrics.rollup_progress(
                                i64::try_from(pass.ranges).unwrap_or(i64::MAX),
                                pass.buckets,
                            );
                            metrics.db_latency("rollup", pass.db_seconds);
                            again = pass.full;
                        }
                        Err(e) => tracing::warn!(error = %e, "roll-up pass failed; retrying"),
                    },
                    () = keep_lease(&db, &holder) => {
                        tracing::warn!(holder = %holder, "roll-up lease lost during a pass; pass abandoned");
                        held = false;
                    }
                }
            }
            Ok(false) => {
                if held {
                    tracing::info!(holder = %holder, "roll-up lease lost to another replica");
                    held = false;
                }
            }
            Err(e) => tracing::warn!(error = %e, "roll-up lease: store error"),
        }
        if again {
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep(IDLE) => {}
            r = shutdown.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use shopfloor_store::StateRow;

    const D: &str = "p1/e1/w1/l1/m1";
    /// A minute-aligned origin (2026-09-01T00:00:00Z).
    const T0: Ms = 1_788_220_800_000;

    #[derive(Debug, Clone, Default)]
    struct Raw {
        states: Vec<StateRow>,
        readings: Vec<ReadingRow>,
    }

    fn st(from: Ms, to: Ms, state: &str) -> StateRow {
        StateRow {
            device: D.into(),
            from: T0 + from,
            to: T0 + to,
            state: state.into(),
        }
    }

    fn rd(role: &str, t: Ms, v: f64) -> ReadingRow {
        ReadingRow {
            device: D.into(),
            role: role.into(),
            point: format!("{role}_count"),
            t: T0 + t,
            v,
            width_bits: Some(16),
            rollover: None,
        }
    }

    /// What a store's `raw_slice` returns (the semantics of the crate docs).
    fn slice(raw: &Raw, from: Ms, to: Ms) -> RawSlice {
        let mut states: Vec<StateRow> = raw
            .states
            .iter()
            .filter(|s| s.to > from && s.from < to)
            .cloned()
            .collect();
        states.sort_by_key(|s| s.from);
        let mut groups: BTreeMap<(String, String), Vec<ReadingRow>> = BTreeMap::new();
        for r in &raw.readings {
            groups
                .entry((r.role.clone(), r.point.clone()))
                .or_default()
                .push(r.clone());
        }
        let mut readings = Vec::new();
        for (_, mut rs) in groups {
            rs.sort_by_key(|r| r.t);
            if let Some(before) = rs.iter().rev().find(|r| r.t < from) {
                readings.push(before.clone());
            }
            readings.extend(rs.iter().filter(|r| r.t >= from && r.t < to).cloned());
            if let Some(after) = rs.iter().find(|r| r.t >= to) {
                readings.push(after.clone());
            }
        }
        let any_data = !states.is_empty() || readings.iter().any(|r| r.t >= from && r.t < to);
        RawSlice {
            states,
            readings,
            activity: Vec::new(),
            any_data,
        }
    }

    fn minutes(raw: &Raw, from: Ms, to: Ms) -> Buckets {
        minute_buckets(D, &slice(raw, from, to), from, to)
    }

    fn key(m: Ms) -> (String, Gran, Ms) {
        (D.to_owned(), Gran::Minute, T0 + m * MINUTE)
    }

    fn ckey(m: Ms, role: &str) -> (String, Gran, Ms, String) {
        (D.to_owned(), Gran::Minute, T0 + m * MINUTE, role.to_owned())
    }

    #[test]
    fn samples_and_links_count_as_activity_with_their_points() {
        let act = |minute: Ms, point: &str, count: i64| shopfloor_store::MinuteActivity {
            minute,
            point: point.into(),
            count,
        };
        let slice = RawSlice {
            activity: vec![
                act(T0, "spindle_speed", 3),
                act(T0, "feed", 2),
                act(T0 + MINUTE, "", 1),
                act(T0 + 5 * MINUTE, "feed", 9), // outside the range: ignored
            ],
            any_data: true,
            ..RawSlice::default()
        };
        let b = minute_buckets(D, &slice, T0, T0 + 2 * MINUTE);
        let a0 = &b.activity[&key(0)];
        assert_eq!((a0.samples, a0.points), (5, 2));
        // A link event is activity without a point.
        let a1 = &b.activity[&key(1)];
        assert_eq!((a1.samples, a1.points), (1, 0));
        assert_eq!(b.activity.len(), 2);
    }

    #[test]
    fn states_are_clipped_to_each_minute() {
        let raw = Raw {
            states: vec![
                st(30_000, 135_000, "producing"),
                st(135_000, 180_000, "idle"),
                // Overlaps the idle interval: counted once (the earlier one wins).
                st(170_000, 200_000, "delay"),
                st(240_000, 250_000, "offline"),
            ],
            ..Raw::default()
        };
        let b = minutes(&raw, T0, T0 + 5 * MINUTE);
        let f = |m| state_fields(&b.states[&key(m)]);
        assert_eq!(f(0), [30_000, 0, 0, 0, 0, 0]);
        assert_eq!(f(1), [60_000, 0, 0, 0, 0, 0]);
        assert_eq!(f(2), [15_000, 0, 0, 45_000, 0, 0]);
        assert_eq!(f(3), [0, 0, 20_000, 0, 0, 0]);
        assert_eq!(f(4), [0, 0, 0, 0, 0, 10_000]);
        assert_eq!(b.states.len(), 5);
        // A range starting inside an interval clips it to the range.
        let c = minutes(&raw, T0 + MINUTE, T0 + 2 * MINUTE);
        assert_eq!(c.states.len(), 1);
        assert_eq!(state_fields(&c.states[&key(1)]), [60_000, 0, 0, 0, 0, 0]);
        // Activity: one non-offline interval per minute it overlaps; offline is no activity.
        assert_eq!(b.activity[&key(2)].samples, 2);
        assert!(!b.activity.contains_key(&key(4)));
    }

    #[test]
    fn counters_wrap_and_reset_by_the_engine_rules() {
        let raw = Raw {
            readings: vec![
                rd("produced", 10_000, 65_530.0),
                rd("produced", 70_000, 4.0),   // wrap: 10
                rd("produced", 130_000, 20.0), // 16
                rd("produced", 190_000, 5.0),  // reset: 5
                rd("produced", 240_000, 9.0),  // on the boundary: minute 3
                rd("produced", 250_000, 12.0), // minute 4
            ],
            ..Raw::default()
        };
        let b = minutes(&raw, T0, T0 + 5 * MINUTE);
        let c = |m| &b.counters[&ckey(m, "produced")];
        // The first reading has nothing before it: a bucket with no delta.
        assert_eq!((c(0).delta, c(0).readings), (0.0, 1));
        assert_eq!((c(1).delta, c(1).wraps, c(1).resets), (10.0, 1, 0));
        assert_eq!((c(2).delta, c(2).wraps, c(2).resets), (16.0, 0, 0));
        assert_eq!((c(3).delta, c(3).wraps, c(3).resets), (9.0, 0, 1));
        assert_eq!(
            (c(3).first_t, c(3).last_t, c(3).readings),
            (T0 + 190_000, T0 + 240_000, 2)
        );
        assert_eq!(c(4).delta, 3.0);
        // The same numbers as the engine over the whole series.
        let rs: Vec<Reading> = raw
            .readings
            .iter()
            .map(|r| Reading {
                at: ts(r.t).unwrap(),
                value: r.v,
            })
            .collect();
        let d = Deltas::new(Register {
            readings: &rs,
            width_bits: Some(16),
            rollover: None,
            replaced_at: &[],
        });
        let whole = d.attributed(ts(T0).unwrap(), ts(T0 + 5 * MINUTE).unwrap());
        let sum: f64 = b.counters.values().map(|c| c.delta).sum();
        assert_eq!(whole.value, Some(sum));
        assert_eq!((d.wraps, d.resets), (1, 1));
    }

    #[test]
    fn a_late_reading_changes_exactly_its_minute_and_the_next_readings() {
        let mut raw = Raw {
            readings: vec![
                rd("produced", 5_000, 100.0),
                rd("produced", 65_000, 110.0),
                rd("produced", 305_000, 150.0),
                rd("produced", 365_000, 160.0),
            ],
            states: vec![st(0, 10 * MINUTE, "producing")],
        };
        let range = (T0, T0 + 10 * MINUTE);
        let before = minutes(&raw, range.0, range.1);
        // A reading of minute 2 arrives late.
        let late = rd("produced", 150_000, 130.0);
        raw.readings.push(late.clone());
        let after = minutes(&raw, range.0, range.1);
        let changed: BTreeSet<Ms> = after
            .counters
            .iter()
            .filter(|(k, v)| before.counters.get(*k) != Some(*v))
            .map(|(k, _)| (k.2 - T0) / MINUTE)
            .chain(
                before
                    .counters
                    .keys()
                    .filter(|k| !after.counters.contains_key(*k))
                    .map(|k| (k.2 - T0) / MINUTE),
            )
            .collect();
        assert_eq!(changed, BTreeSet::from([2, 5]));
        // What the worker recomputes for the late reading's dirty range: its minute and the
        // minute of the next reading; overlaid on the old buckets that gives the full result.
        let planned = plan_minutes(&[(late.t, late.t + 1)]);
        assert_eq!(planned, vec![(T0 + 2 * MINUTE, T0 + 3 * MINUTE)]);
        let s = slice(&raw, planned[0].0, planned[0].1);
        let follow = follow_minutes(&s, planned[0].1);
        assert_eq!(follow, BTreeSet::from([T0 + 5 * MINUTE]));
        let mut fresh = minute_buckets(D, &s, planned[0].0, planned[0].1);
        for m in follow {
            fresh.extend(minutes(&raw, m, m + MINUTE));
        }
        let mut overlaid = before.clone();
        for (a, _) in [(planned[0].0, 0), (T0 + 5 * MINUTE, 0)] {
            overlaid.remove_range(D, Gran::Minute, a, a + MINUTE);
        }
        overlaid.extend(fresh);
        assert_eq!(overlaid, after);
    }

    #[test]
    fn dirty_ranges_are_aligned_and_merged() {
        // A reading exactly on a minute boundary belongs to the minute before: included.
        assert_eq!(
            plan_minutes(&[(T0 + MINUTE, T0 + MINUTE + 5_000)]),
            vec![(T0, T0 + 2 * MINUTE)]
        );
        assert_eq!(
            plan_minutes(&[(T0 + 90_000, T0 + 90_000), (T0 + 130_000, T0 + 200_000)]),
            vec![(T0 + MINUTE, T0 + 4 * MINUTE)]
        );
        assert_eq!(
            plan_minutes(&[(T0 + 10 * MINUTE + 1, T0 + 11 * MINUTE), (T0 + 1, T0 + 2)]),
            vec![(T0, T0 + MINUTE), (T0 + 10 * MINUTE, T0 + 11 * MINUTE)]
        );
    }

    /// xorshift64*: deterministic pseudo-random numbers for the property test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> i64 {
            i64::try_from(self.next() % n).unwrap()
        }
    }

    fn random_raw(rng: &mut Rng, span: Ms) -> Raw {
        let mut raw = Raw::default();
        let names = [
            "producing",
            "setup",
            "delay",
            "idle",
            "planned_down",
            "offline",
        ];
        let mut t = rng.below(90_000);
        while t < span {
            let len = 1 + rng.below(400_000);
            if rng.below(5) > 0 {
                let s = names[usize::try_from(rng.below(6)).unwrap()];
                raw.states.push(st(t, (t + len).min(span + 50_000), s));
            }
            t += len;
        }
        let mut v = 65_000.0;
        let mut t = rng.below(30_000);
        while t < span + 200_000 {
            raw.readings.push(rd("produced", t, v));
            v += rng.below(300) as f64;
            if v >= 65_536.0 {
                v -= 65_536.0;
            }
            if rng.below(40) == 0 {
                v = rng.below(50) as f64;
            }
            t += 1 + rng.below(100_000);
            if rng.below(10) == 0 {
                t = rollup_boundary(t);
            }
        }
        raw
    }

    /// Puts some readings exactly on a minute boundary.
    fn rollup_boundary(t: Ms) -> Ms {
        floor_minute(t) + MINUTE
    }

    #[test]
    fn minutes_add_up_to_hours_and_to_the_whole_for_any_split() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let span = 3 * HOUR;
        for case in 0..40 {
            let raw = random_raw(&mut rng, span);
            let whole = minutes(&raw, T0, T0 + span);
            // Random splits into consecutive ranges, each computed from its own slice.
            let mut cuts = vec![0, span];
            for _ in 0..rng.below(12) {
                cuts.push(rng.below(span as u64 / u64::try_from(MINUTE).unwrap()) * MINUTE);
            }
            cuts.sort_unstable();
            cuts.dedup();
            let mut pieced = Buckets::default();
            for w in cuts.windows(2) {
                pieced.extend(minutes(&raw, T0 + w[0], T0 + w[1]));
            }
            assert_eq!(pieced, whole, "case {case}: split at {cuts:?}");

            // Hours from minutes; the whole from hours and from minutes agree.
            let mut hours = Buckets::default();
            for h in 0..3 {
                let start = T0 + h * HOUR;
                let parts = whole.range(D, Gran::Minute, start, start + HOUR);
                hours.extend(aggregate(D, Gran::Hour, start, &parts));
            }
            let from_hours = aggregate(D, Gran::Day, T0, &hours);
            let from_minutes = aggregate(D, Gran::Day, T0, &whole);
            assert_eq!(from_hours.states, from_minutes.states, "case {case}");
            assert_eq!(from_hours.activity, from_minutes.activity, "case {case}");
            for (k, c) in &from_hours.counters {
                let m = &from_minutes.counters[k];
                assert_eq!(
                    (c.first_t, c.last_t, c.readings, c.wraps, c.resets),
                    (m.first_t, m.last_t, m.readings, m.wraps, m.resets)
                );
                assert!((c.delta - m.delta).abs() < 1e-6, "case {case}");
            }
            // The whole equals the engine's own computation over the raw data.
            let rs: Vec<Reading> = raw
                .readings
                .iter()
                .map(|r| Reading {
                    at: ts(r.t).unwrap(),
                    value: r.v,
                })
                .collect();
            let d = Deltas::new(Register {
                readings: &rs,
                width_bits: Some(16),
                rollover: None,
                replaced_at: &[],
            });
            let engine = d
                .attributed(ts(T0).unwrap(), ts(T0 + span).unwrap())
                .value
                .unwrap_or(0.0);
            let ours: f64 = from_hours.counters.values().map(|c| c.delta).sum();
            assert!(
                (engine - ours).abs() < 1e-6,
                "case {case}: {engine} vs {ours}"
            );
            // State time: what the intervals cover inside the span, never more than the span.
            let total: i64 = from_hours
                .states
                .values()
                .map(|s| state_fields(s).iter().sum::<i64>())
                .sum();
            let covered: i64 = raw
                .states
                .iter()
                .map(|s| (s.to.min(T0 + span) - s.from.max(T0)).max(0))
                .sum();
            assert_eq!(total, covered, "case {case}");
            // Stored hours are consistent with their minutes.
            for h in 0..3 {
                let start = T0 + h * HOUR;
                let parts = whole.range(D, Gran::Minute, start, start + HOUR);
                assert!(consistent(D, Gran::Hour, start, &hours, &parts));
                let mut fewer = parts.clone();
                if let Some(k) = fewer.states.keys().next().cloned() {
                    fewer.states.remove(&k);
                    assert!(!consistent(D, Gran::Hour, start, &hours, &fewer));
                }
            }
        }
    }

    #[test]
    fn tiles_use_the_coarsest_whole_buckets_in_local_time() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap().as_millisecond();
        // 2026-01-31 23:58 → 2026-03-02 01:02 (+08:00).
        let t = tile(
            at("2026-01-31T23:58:00+08:00"),
            at("2026-03-02T01:02:00+08:00"),
            &tz,
            Gran::Month,
        )
        .unwrap();
        let grans: Vec<Gran> = t.iter().map(|t| t.gran).collect();
        assert_eq!(
            grans,
            [
                vec![Gran::Minute; 2],
                vec![Gran::Month, Gran::Day, Gran::Hour],
                vec![Gran::Minute; 2]
            ]
            .concat()
        );
        assert_eq!(t[2].start, at("2026-02-01T00:00:00+08:00"));
        assert_eq!(t[2].end, at("2026-03-01T00:00:00+08:00"));
        assert!(t.windows(2).all(|w| w[0].end == w[1].start));
        // Half-hour zone: no hour tile crosses local midnight.
        let tz = TimeZone::get("Asia/Kolkata").unwrap();
        let t = tile(
            at("2026-05-01T22:00:00+05:30"),
            at("2026-05-02T02:00:00+05:30"),
            &tz,
            Gran::Month,
        )
        .unwrap();
        let midnight = at("2026-05-02T00:00:00+05:30");
        assert!(t.iter().all(|t| !(t.start < midnight && t.end > midnight)));
        assert_eq!(t.iter().map(|t| t.end - t.start).sum::<Ms>(), 4 * HOUR);
        assert!(tile(1, MINUTE, &tz, Gran::Month).is_err());
    }

    #[test]
    fn local_days_and_months() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        let at = |s: &str| s.parse::<Timestamp>().unwrap().as_millisecond();
        let t = at("2026-02-28T15:00:00Z"); // 23:00 local, Feb 28
        assert_eq!(day_start(t, &tz), Some(at("2026-02-28T00:00:00+08:00")));
        assert_eq!(
            next_day_start(t, &tz),
            Some(at("2026-03-01T00:00:00+08:00"))
        );
        assert_eq!(month_start(t, &tz), Some(at("2026-02-01T00:00:00+08:00")));
        assert_eq!(
            next_month_start(t, &tz),
            Some(at("2026-03-01T00:00:00+08:00"))
        );
        // A DST day has 23 hours.
        let ny = TimeZone::get("America/New_York").unwrap();
        let d = at("2026-03-08T12:00:00-04:00");
        let len = next_day_start(d, &ny).unwrap() - day_start(d, &ny).unwrap();
        assert_eq!(len, 23 * HOUR);
    }
}
