//! The agent → gateway batch (`shopfloor.batch/1`): what one agent acquired in one window, so
//! that the gateway can recompute every indicator from it. Wire format, canonical encoding,
//! hash chain and signature are documented in `docs/PROTOCOL.md`.
//!
//! Times in batches are integer milliseconds since the Unix epoch (UTC): exact, compact and
//! canonical (one spelling per instant), unlike RFC 3339 text.
//!
//! The agent cuts [`Contents`] every batch interval; the outbox stores them; sealing (at first
//! publication) wraps them into a [`Body`] with `seq` and `prev` and signs the body's exact
//! bytes.
//!
//! Sealing and opening (wire format, `docs/PROTOCOL.md` § Wire format):
//! - [`seal`]: [`Contents`] + agent, seq, prev, seal time, key → [`Sealed`] (the exact payload
//!   bytes `{"body":<BODY>,"sig":"<SIG>"}` and the body hash the next batch chains to);
//! - [`open`]: payload bytes → [`Opened`] (shape checked, body bytes located in the payload
//!   itself, never re-serialised), then [`Opened::verify`] with the agent's public key;
//! - [`public_key_text`] / [`parse_public_key`]: `ed25519:<base64>` as configured at the
//!   gateway and printed by `shopfloor-agent key show`.
//!
//! Everything here is pure: no I/O, no clock reads; [`open`] never panics, whatever the bytes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer as _};
/// The key types batches are sealed and verified with (re-exported so that users of this
/// module need no direct dependency on the signature crate).
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::FieldError;
use crate::evidence::State;

/// Schema id carried by every batch body.
pub const SCHEMA: &str = "shopfloor.batch/1";

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// One sample value. JSON: a bool, an integer, a float (always finite) or a string; a read
/// that failed carries `err` instead.
///
/// Decoding is written by hand rather than with `#[serde(untagged)]`: the untagged derive
/// buffers every value and tries the variants in turn, formatting an error for each miss (a
/// float fails `Bool`, `Int` and `UInt` first), which made decoding batches the agent's and the
/// gateway's largest cost (`docs/BENCHMARKS.md`). The result is the same: a JSON integer is
/// `Int` when it fits in `i64`, else `UInt`; a number with a fraction or exponent is `Float`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SampleValue {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
}

impl SampleValue {
    /// The numeric reading of a value: bools count as 0/1, integers and floats as they are,
    /// text has none.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            SampleValue::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            SampleValue::Int(i) => Some(*i as f64),
            SampleValue::UInt(u) => Some(*u as f64),
            SampleValue::Float(f) => Some(*f),
            SampleValue::Text(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for SampleValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SampleValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bool, a number or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<SampleValue, E> {
                Ok(SampleValue::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<SampleValue, E> {
                Ok(SampleValue::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<SampleValue, E> {
                Ok(match i64::try_from(v) {
                    Ok(i) => SampleValue::Int(i),
                    Err(_) => SampleValue::UInt(v),
                })
            }
            fn visit_f64<E>(self, v: f64) -> Result<SampleValue, E> {
                Ok(SampleValue::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<SampleValue, E> {
                Ok(SampleValue::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<SampleValue, E> {
                Ok(SampleValue::Text(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// One reported sample of one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Source time (device or server timestamp where the protocol has one, else receive time).
    pub t: Millis,
    /// The value; absent when the read failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<SampleValue>,
    /// Why the read failed (device exception, bad status, undecodable value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
}

/// The reported samples of one point in the window, in time order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointSamples {
    pub point: String,
    pub samples: Vec<Sample>,
}

/// First, last, min and max of one point's numeric readings in the window, over every
/// reading the agent received (not only the reported ones). Kept when raw samples are dropped,
/// so meters and counters stay computable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Summary {
    pub point: String,
    /// Readings received (good and failed).
    pub count: u64,
    /// Failed readings.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
    /// Numeric readings only (bools count as 0/1); absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<Reading>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Reading>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A point's running summary while the window is open: a [`Summary`] without its point name,
/// 64 bytes instead of 120 (the agent keeps one for every point of every device). The one
/// implementation of what a summary counts, shared by the agent's pipeline and
/// [`Summary::of_samples`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tally {
    count: u32,
    errors: u32,
    /// First and last numeric reading, and the extremes (valid when `numeric`).
    first: Reading,
    last_t: Millis,
    last_v: f64,
    min: f64,
    max: f64,
    numeric: bool,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            count: 0,
            errors: 0,
            first: Reading { t: 0, v: 0.0 },
            last_t: 0,
            last_v: 0.0,
            min: 0.0,
            max: 0.0,
            numeric: false,
        }
    }
}

impl Tally {
    /// Counts one reading at `t`: `None` is a failed read (an error); text is counted but
    /// has no numeric reading.
    pub fn record(&mut self, t: Millis, value: Option<&SampleValue>) {
        self.count = self.count.saturating_add(1);
        let Some(value) = value else {
            self.errors = self.errors.saturating_add(1);
            return;
        };
        let Some(v) = value.as_f64() else { return };
        if self.numeric {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        } else {
            self.numeric = true;
            self.first = Reading { t, v };
            self.min = v;
            self.max = v;
        }
        self.last_t = t;
        self.last_v = v;
    }

    /// Readings counted so far.
    pub fn count(&self) -> u64 {
        u64::from(self.count)
    }

    /// The summary of `point`.
    pub fn summary(&self, point: impl Into<String>) -> Summary {
        let n = |x: f64| self.numeric.then_some(x);
        Summary {
            point: point.into(),
            count: u64::from(self.count),
            errors: u64::from(self.errors),
            first: self.numeric.then_some(self.first),
            last: self.numeric.then_some(Reading {
                t: self.last_t,
                v: self.last_v,
            }),
            min: n(self.min),
            max: n(self.max),
        }
    }
}

impl Summary {
    /// An empty summary of `point`.
    pub fn new(point: impl Into<String>) -> Summary {
        Summary {
            point: point.into(),
            count: 0,
            errors: 0,
            first: None,
            last: None,
            min: None,
            max: None,
        }
    }

    /// The summary of a point whose every reading in the window is one of `samples`.
    pub fn of_samples(point: &str, samples: &[Sample]) -> Summary {
        let mut t = Tally::default();
        for x in samples {
            t.record(x.t, x.v.as_ref());
        }
        t.summary(point)
    }

    /// Equal to the bit (`-0.0` is not `0.0`), so that dropping a summary and deriving it
    /// again gives the same bytes.
    fn same(&self, o: &Summary) -> bool {
        let r = |a: Option<Reading>, b: Option<Reading>| match (a, b) {
            (Some(a), Some(b)) => a.t == b.t && a.v.to_bits() == b.v.to_bits(),
            (a, b) => a.is_none() && b.is_none(),
        };
        let f = |a: Option<f64>, b: Option<f64>| a.map(f64::to_bits) == b.map(f64::to_bits);
        self.point == o.point
            && self.count == o.count
            && self.errors == o.errors
            && r(self.first, o.first)
            && r(self.last, o.last)
            && f(self.min, o.min)
            && f(self.max, o.max)
    }
}

impl DeviceData {
    /// Omits the summaries that the raw samples imply: those of points whose every reading
    /// in the window was reported ([`Summary::of_samples`] gives them back exactly). With
    /// every tag changing that is every summary, half of a batch's bytes.
    /// [`Contents::strip_samples`] puts them back before it drops the samples.
    pub fn omit_implied_summaries(&mut self) {
        let by_point: std::collections::HashMap<&str, &[Sample]> = self
            .samples
            .iter()
            .map(|p| (p.point.as_str(), p.samples.as_slice()))
            .collect();
        self.summaries
            .retain(|s| match by_point.get(s.point.as_str()) {
                Some(samples) => {
                    s.count != samples.len() as u64
                        || !Summary::of_samples(&s.point, samples).same(s)
                }
                None => true,
            });
    }

    /// Adds the summaries the raw samples imply for points that have samples and no summary,
    /// keeping the summaries in point order.
    fn restore_implied_summaries(&mut self) {
        let have: std::collections::HashSet<&str> =
            self.summaries.iter().map(|s| s.point.as_str()).collect();
        let missing: Vec<Summary> = self
            .samples
            .iter()
            .filter(|p| !have.contains(p.point.as_str()))
            .map(|p| Summary::of_samples(&p.point, &p.samples))
            .collect();
        if !missing.is_empty() {
            self.summaries.extend(missing);
            self.summaries.sort_by(|a, b| a.point.cmp(&b.point));
        }
    }
}

/// A numeric reading at a time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reading {
    pub t: Millis,
    pub v: f64,
}

/// A closed machine-state interval `[from, to)` (ISO 22400-2 states, INDICATORS.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSpan {
    pub from: Millis,
    pub to: Millis,
    pub state: State,
}

/// Readings of a cumulative register (part counter or meter) in the window, in time order,
/// as the engine's counter logic consumes them (wraps and resets are resolved by the reader).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CounterReadings {
    /// Role (`produced`, `good`, `scrap`) for part counters, or the meter's carrier
    /// (`electricity`, `water`, `natural_gas`, …) for meters.
    pub role: String,
    /// Point the readings come from.
    pub point: String,
    /// Register width in bits, when the register wraps there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_bits: Option<u8>,
    /// Where the register wraps, in its engineering unit (scaled meter totals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollover: Option<f64>,
    pub readings: Vec<Reading>,
}

/// A change of the device link (connection up or down), with the driver's reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkChange {
    pub t: Millis,
    pub up: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// What the outbox dropped from this device's data to stay within its disk budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropped {
    /// Raw samples removed (their summaries, states and counters are kept).
    pub samples: u64,
}

/// Everything one device delivered in the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceData {
    /// Entity path of the equipment or meter (`p1/e1/w1/l1/cnc-01`).
    pub id: String,
    /// Template the device was read with (`cnc-modbus-generic`).
    pub template: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub samples: Vec<PointSamples>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summaries: Vec<Summary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub states: Vec<StateSpan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counters: Vec<CounterReadings>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<LinkChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<Dropped>,
}

/// What the agent cuts every batch interval: the window `(from, to]` and each device's data,
/// devices in id order. Unsigned; the outbox stores this until the batch is sealed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contents {
    pub from: Millis,
    pub to: Millis,
    pub devices: Vec<DeviceData>,
}

impl Contents {
    /// Raw samples carried.
    pub fn sample_count(&self) -> u64 {
        self.devices
            .iter()
            .flat_map(|d| &d.samples)
            .map(|p| p.samples.len() as u64)
            .sum()
    }

    /// Removes every raw sample, recording per device how many were dropped; summaries
    /// (including those the samples implied, [`DeviceData::omit_implied_summaries`]), states,
    /// counters and link changes stay. Returns the number removed.
    pub fn strip_samples(&mut self) -> u64 {
        let mut total = 0;
        for d in &mut self.devices {
            let n: u64 = d.samples.iter().map(|p| p.samples.len() as u64).sum();
            if n > 0 {
                d.restore_implied_summaries();
                d.samples.clear();
                d.dropped.get_or_insert_with(Dropped::default).samples += n;
                total += n;
            }
        }
        total
    }
}

/// A sealed batch body: the signed part of a batch on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    /// [`SCHEMA`].
    pub schema: String,
    /// Agent id (also the topic segment).
    pub agent: String,
    /// 1, 2, 3, … per agent, never reused, across restarts.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the previous batch's body bytes; 64 zeros for seq 1.
    pub prev: String,
    /// When the batch was sealed (first publication).
    pub sealed: Millis,
    /// [`Contents::from`].
    pub from: Millis,
    /// [`Contents::to`].
    pub to: Millis,
    /// [`Contents::devices`].
    pub devices: Vec<DeviceData>,
}

/// `prev` of the first batch (seq 1): 64 zeros.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Prefix of the public key text (`ed25519:<standard base64 of the 32 key bytes>`).
pub const PUBLIC_KEY_PREFIX: &str = "ed25519:";

const PAYLOAD_HEAD: &[u8] = b"{\"body\":";
const SIG_MARK: &[u8] = b",\"sig\":\"";
const PAYLOAD_TAIL: &[u8] = b"\"}";

/// Why a batch could not be sealed, opened or verified, or a public key not parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The payload is not a well-formed batch: the field path (`body.devices[2].id`, `sig`,
    /// empty for the payload as a whole) and the reason. Also returned by [`seal`] and
    /// [`check_contents`] for contents that would not open at the gateway.
    #[error("{0}")]
    Malformed(FieldError),
    /// Well-formed, but the signature does not verify with the given key (forged, altered, or
    /// signed by another agent).
    #[error("sig: signature does not verify with the agent's public key")]
    BadSignature,
    /// A public key text that is not `ed25519:<base64 of 32 bytes>` of a usable key.
    #[error("public key: {0}")]
    BadKey(String),
}

impl BatchError {
    fn at(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed(FieldError::new(path, reason))
    }
}

/// A sealed batch as the outbox stores and the publisher sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub seq: u64,
    /// The exact MQTT payload: `{"body":<BODY>,"sig":"<SIG>"}`.
    pub payload: Vec<u8>,
    /// Lowercase hex SHA-256 of the BODY bytes: the next batch's `prev`.
    pub body_hash: String,
}

/// A payload that [`open`] accepted: shape checked, signature not yet verified.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    pub body: Body,
    /// The exact BODY bytes as received (what the signature and the hash cover).
    pub body_bytes: Vec<u8>,
    /// Lowercase hex SHA-256 of [`Opened::body_bytes`]: the next batch's `prev`.
    pub body_hash: String,
    /// The Ed25519 signature (64 bytes, decoded from `sig`).
    pub sig: [u8; 64],
}

impl Opened {
    /// Checks the signature over the exact body bytes (`verify_strict`: rejects weak keys and
    /// non-canonical signatures, so one body has exactly one valid signature per key).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), BatchError> {
        let sig = Signature::from_bytes(&self.sig);
        key.verify_strict(&self.body_bytes, &sig)
            .map_err(|_| BatchError::BadSignature)
    }

    /// Whether this batch chains to a predecessor whose body hash is `prev_hash`.
    pub fn follows(&self, prev_hash: &str) -> bool {
        self.body.prev == prev_hash
    }
}

/// Lowercase hex SHA-256 of `bytes` (the chain hash of a body).
pub fn body_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0f));
    }
    out
}

fn hex_digit(n: u8) -> char {
    char::from(b"0123456789abcdef"[usize::from(n & 0x0f)])
}

/// Wraps `contents` into a [`Body`] (`seq`, `prev`, `sealed`), encodes it canonically
/// (`serde_json::to_vec`: fields in declaration order, no whitespace), signs the exact body
/// bytes and builds the payload. Checks the body with the same rules as [`open`] first, so a
/// sealed batch always opens at the gateway; errors are [`BatchError::Malformed`] with
/// `body.…` paths.
pub fn seal(
    contents: Contents,
    agent: &str,
    seq: u64,
    prev: &str,
    sealed: Millis,
    key: &SigningKey,
) -> Result<Sealed, BatchError> {
    let body = Body {
        schema: SCHEMA.to_owned(),
        agent: agent.to_owned(),
        seq,
        prev: prev.to_owned(),
        sealed,
        from: contents.from,
        to: contents.to,
        devices: contents.devices,
    };
    check_body(&body)?;
    let mut payload = PAYLOAD_HEAD.to_vec();
    serde_json::to_writer(&mut payload, &body)
        .map_err(|e| BatchError::at("body", format!("cannot encode: {e}")))?;
    Ok(finish_payload(payload, seq, key))
}

/// `payload` holds `{"body":` and the body bytes: signs the body, appends the signature and
/// the closing brace.
fn finish_payload(mut payload: Vec<u8>, seq: u64, key: &SigningKey) -> Sealed {
    let body_bytes = payload.get(PAYLOAD_HEAD.len()..).unwrap_or_default();
    let sig_text = BASE64.encode(key.sign(body_bytes).to_bytes());
    let body_hash = body_hash(body_bytes);
    payload.reserve(SIG_MARK.len() + sig_text.len() + PAYLOAD_TAIL.len());
    payload.extend_from_slice(SIG_MARK);
    payload.extend_from_slice(sig_text.as_bytes());
    payload.extend_from_slice(PAYLOAD_TAIL);
    Sealed {
        seq,
        payload,
        body_hash,
    }
}

/// [`seal`] for contents that are already encoded: `contents_json` must be exactly
/// `serde_json::to_vec(&contents)` of contents that passed [`check_contents`] (the outbox
/// stores that encoding with its SHA-256 and checks the hash before calling this). The body is
/// built by splicing, without decoding the contents again: [`Body`]'s fields are [`Contents`]'
/// fields after `schema`, `agent`, `seq`, `prev` and `sealed`, in the same order, so
/// `{"schema":…,"sealed":T,` followed by the encoding without its opening `{` is byte for byte
/// what [`seal`] would encode (tested). The head (`agent`, `seq`, `prev`) is checked as
/// [`open`] checks it.
pub fn seal_encoded(
    contents_json: &[u8],
    agent: &str,
    seq: u64,
    prev: &str,
    sealed: Millis,
    key: &SigningKey,
) -> Result<Sealed, BatchError> {
    const CONTENTS_HEAD: &[u8] = b"{\"from\":";
    if !contents_json.starts_with(CONTENTS_HEAD) || contents_json.last() != Some(&b'}') {
        return Err(BatchError::at(
            "body",
            "stored contents are not an encoded shopfloor.batch/1 window",
        ));
    }
    check_head(agent, seq, prev)?;
    let agent_json = serde_json::to_string(agent)
        .map_err(|e| BatchError::at("body.agent", format!("cannot encode: {e}")))?;
    let head = format!(
        "{{\"schema\":\"{SCHEMA}\",\"agent\":{agent_json},\"seq\":{seq},\"prev\":\"{prev}\",\"sealed\":{sealed},"
    );
    let rest = contents_json.get(1..).unwrap_or_default();
    let mut payload = Vec::with_capacity(
        PAYLOAD_HEAD.len() + head.len() + rest.len() + SIG_MARK.len() + 88 + PAYLOAD_TAIL.len(),
    );
    payload.extend_from_slice(PAYLOAD_HEAD);
    payload.extend_from_slice(head.as_bytes());
    payload.extend_from_slice(rest);
    Ok(finish_payload(payload, seq, key))
}

/// Parses a payload and checks its shape (not the signature: see [`Opened::verify`]).
///
/// The payload must be exactly `{"body":<BODY>,"sig":"<SIG>"}`; BODY is located in the
/// received bytes (the last `,"sig":"` is the separator: base64 has no `"`), so the hash and
/// the signature check cover exactly what the agent signed. Rules: `schema` is [`SCHEMA`],
/// `agent` is a non-empty topic segment (no `/`, `+`, `#`, control characters), `seq` ≥ 1,
/// `prev` is 64 lowercase hex digits ([`ZERO_HASH`] for seq 1), `from` ≤ `to`, devices
/// sorted by `id` and unique, ids non-empty, state spans `from` ≤ `to`, every float finite,
/// no unknown fields. The first problem is returned with its path. Never panics.
pub fn open(payload: &[u8]) -> Result<Opened, BatchError> {
    let rest = payload.strip_prefix(PAYLOAD_HEAD).ok_or_else(|| {
        BatchError::at(
            "",
            "payload must start with {\"body\": (a shopfloor.batch/1 batch)",
        )
    })?;
    let rest = rest
        .strip_suffix(PAYLOAD_TAIL)
        .ok_or_else(|| BatchError::at("", "payload must end with ,\"sig\":\"<base64>\"}"))?;
    let mark = rfind(rest, SIG_MARK).ok_or_else(|| {
        BatchError::at(
            "sig",
            "missing: payload must end with ,\"sig\":\"<base64>\"}",
        )
    })?;
    let body_bytes = &rest[..mark];
    let sig_text = &rest[mark + SIG_MARK.len()..];

    let sig_vec = BASE64
        .decode(sig_text)
        .map_err(|e| BatchError::at("sig", format!("not standard base64: {e}")))?;
    let sig: [u8; 64] = sig_vec.as_slice().try_into().map_err(|_| {
        BatchError::at(
            "sig",
            format!(
                "must be 64 bytes (an Ed25519 signature), got {}",
                sig_vec.len()
            ),
        )
    })?;

    if body_bytes.first() != Some(&b'{') || body_bytes.last() != Some(&b'}') {
        return Err(BatchError::at(
            "body",
            "must be a JSON object (no whitespace around it)",
        ));
    }
    // The plain decoder first (it accepts exactly what the path-tracking one accepts, and
    // rejects trailing characters too); only a body it refuses is decoded again with path
    // tracking, which costs about as much as the decoding itself, to name the field.
    let body: Body = match serde_json::from_slice(body_bytes) {
        Ok(body) => body,
        Err(plain) => {
            let mut de = serde_json::Deserializer::from_slice(body_bytes);
            let body: Body = serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let inner = e.path().to_string();
                let path = if inner == "." || inner.is_empty() {
                    "body".to_owned()
                } else {
                    format!("body.{inner}")
                };
                BatchError::at(path, e.inner().to_string())
            })?;
            de.end()
                .map_err(|e| BatchError::at("body", format!("trailing characters: {e}")))?;
            // Not reached for any input serde_json refuses; kept so that a disagreement can
            // never let a body through unchecked.
            let _ = body;
            return Err(BatchError::at("body", plain.to_string()));
        }
    };
    check_body(&body)?;

    Ok(Opened {
        body_hash: body_hash(body_bytes),
        body_bytes: body_bytes.to_vec(),
        body,
        sig,
    })
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    (0..=haystack.len() - needle.len())
        .rev()
        .find(|&i| haystack.get(i..i + needle.len()) == Some(needle))
}

/// The text form of an agent's public key: `ed25519:<standard base64 of the 32 bytes>`.
pub fn public_key_text(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(key.as_bytes()))
}

/// Parses [`public_key_text`] (surrounding whitespace ignored). Rejects keys that are not a
/// valid curve point and weak (small-order) keys.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, BatchError> {
    let text = text.trim();
    let b64 = text.strip_prefix(PUBLIC_KEY_PREFIX).ok_or_else(|| {
        BatchError::BadKey(format!(
            "must start with {PUBLIC_KEY_PREFIX:?} (as printed by `shopfloor-agent key show`)"
        ))
    })?;
    let bytes = BASE64
        .decode(b64)
        .map_err(|e| BatchError::BadKey(format!("not standard base64: {e}")))?;
    let bytes: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| BatchError::BadKey(format!("must be 32 bytes, got {}", bytes.len())))?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|_| BatchError::BadKey("not a valid Ed25519 public key".to_owned()))?;
    if key.is_weak() {
        return Err(BatchError::BadKey(
            "weak (small-order) Ed25519 key, refused".to_owned(),
        ));
    }
    Ok(key)
}

/// Checks contents with the rules [`open`] applies to a body (window, device order, finite
/// floats, state spans), with paths relative to the contents (`devices[2].id`). The outbox
/// calls it on push, so unsealable contents are refused when they are produced.
pub fn check_contents(contents: &Contents) -> Result<(), BatchError> {
    check_window_and_devices("", contents.from, contents.to, &contents.devices)
}

fn check_body(body: &Body) -> Result<(), BatchError> {
    if body.schema != SCHEMA {
        return Err(BatchError::at(
            "body.schema",
            format!("must be {SCHEMA:?}, got {:?}", body.schema),
        ));
    }
    check_head(&body.agent, body.seq, &body.prev)?;
    check_window_and_devices("body.", body.from, body.to, &body.devices)
}

/// `agent`, `seq` and `prev` of a body.
fn check_head(agent: &str, seq: u64, prev: &str) -> Result<(), BatchError> {
    check_agent_id(agent).map_err(|reason| BatchError::at("body.agent", reason))?;
    if seq == 0 {
        return Err(BatchError::at("body.seq", "must be at least 1"));
    }
    if prev.len() != 64 || !prev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(BatchError::at(
            "body.prev",
            "must be 64 lowercase hex digits (SHA-256 of the previous body)",
        ));
    }
    if seq == 1 && prev != ZERO_HASH {
        return Err(BatchError::at(
            "body.prev",
            "must be 64 zeros for seq 1 (the first batch has no predecessor)",
        ));
    }
    Ok(())
}

/// An agent id as it appears in topics and batches: non-empty, no `/`, `+`, `#` (topic level
/// separator and wildcards), no control characters.
pub fn check_agent_id(agent: &str) -> Result<(), String> {
    if agent.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(c) = agent
        .chars()
        .find(|c| matches!(c, '/' | '+' | '#') || c.is_control())
    {
        return Err(format!(
            "{c:?} is not allowed in an agent id (it is an MQTT topic level)"
        ));
    }
    Ok(())
}

fn check_window_and_devices(
    p: &str,
    from: Millis,
    to: Millis,
    devices: &[DeviceData],
) -> Result<(), BatchError> {
    if from > to {
        return Err(BatchError::at(
            format!("{p}to"),
            format!("window ends ({to}) before it starts (from = {from})"),
        ));
    }
    let mut prev_id: Option<&str> = None;
    for (i, d) in devices.iter().enumerate() {
        let dp = format!("{p}devices[{i}]");
        if d.id.is_empty() {
            return Err(BatchError::at(format!("{dp}.id"), "must not be empty"));
        }
        if let Some(prev) = prev_id
            && d.id.as_str() <= prev
        {
            return Err(BatchError::at(
                format!("{dp}.id"),
                format!(
                    "{:?} is not after {prev:?}: devices must be sorted by id and unique",
                    d.id
                ),
            ));
        }
        prev_id = Some(&d.id);
        check_device(&dp, d)?;
    }
    Ok(())
}

fn check_device(dp: &str, d: &DeviceData) -> Result<(), BatchError> {
    // Paths are built only for the value at fault: formatting one per sample cost more than
    // the check itself at 100,000 samples/s.
    for (i, ps) in d.samples.iter().enumerate() {
        for (j, s) in ps.samples.iter().enumerate() {
            if let Some(SampleValue::Float(v)) = s.v
                && !v.is_finite()
            {
                return Err(not_finite(format!("{dp}.samples[{i}].samples[{j}].v")));
            }
        }
    }
    for (i, s) in d.summaries.iter().enumerate() {
        let sp = || format!("{dp}.summaries[{i}]");
        if let Some(r) = s.first {
            finite(r.v, || format!("{}.first.v", sp()))?;
        }
        if let Some(r) = s.last {
            finite(r.v, || format!("{}.last.v", sp()))?;
        }
        if let Some(v) = s.min {
            finite(v, || format!("{}.min", sp()))?;
        }
        if let Some(v) = s.max {
            finite(v, || format!("{}.max", sp()))?;
        }
    }
    for (i, s) in d.states.iter().enumerate() {
        if s.from > s.to {
            return Err(BatchError::at(
                format!("{dp}.states[{i}].to"),
                format!("span ends ({}) before it starts (from = {})", s.to, s.from),
            ));
        }
    }
    for (i, c) in d.counters.iter().enumerate() {
        if let Some(v) = c.rollover {
            finite(v, || format!("{dp}.counters[{i}].rollover"))?;
        }
        for (j, r) in c.readings.iter().enumerate() {
            finite(r.v, || format!("{dp}.counters[{i}].readings[{j}].v"))?;
        }
    }
    Ok(())
}

fn finite(v: f64, path: impl FnOnce() -> String) -> Result<(), BatchError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(not_finite(path()))
    }
}

fn not_finite(path: String) -> BatchError {
    BatchError::at(path, "must be a finite number")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    /// The example of docs/PROTOCOL.md: one CNC machine, ten minutes.
    fn example_contents() -> Contents {
        Contents {
            from: 1_790_000_000_000,
            to: 1_790_000_600_000,
            devices: vec![DeviceData {
                id: "p1/e1/w1/l1/cnc-01".to_owned(),
                template: "cnc-modbus-generic".to_owned(),
                samples: vec![PointSamples {
                    point: "spindle_load".to_owned(),
                    samples: vec![
                        Sample {
                            t: 1_790_000_012_500,
                            v: Some(SampleValue::Float(41.5)),
                            err: None,
                        },
                        Sample {
                            t: 1_790_000_300_000,
                            v: None,
                            err: Some("exception 02 (illegal data address)".to_owned()),
                        },
                    ],
                }],
                summaries: vec![Summary {
                    point: "spindle_load".to_owned(),
                    count: 600,
                    errors: 1,
                    first: Some(Reading {
                        t: 1_790_000_001_000,
                        v: 40.0,
                    }),
                    last: Some(Reading {
                        t: 1_790_000_600_000,
                        v: 38.25,
                    }),
                    min: Some(0.0),
                    max: Some(77.5),
                }],
                states: vec![
                    StateSpan {
                        from: 1_790_000_000_000,
                        to: 1_790_000_420_000,
                        state: State::Producing,
                    },
                    StateSpan {
                        from: 1_790_000_420_000,
                        to: 1_790_000_600_000,
                        state: State::Idle,
                    },
                ],
                counters: vec![CounterReadings {
                    role: "produced".to_owned(),
                    point: "part_count".to_owned(),
                    width_bits: Some(16),
                    rollover: None,
                    readings: vec![
                        Reading {
                            t: 1_790_000_000_000,
                            v: 65_530.0,
                        },
                        Reading {
                            t: 1_790_000_600_000,
                            v: 4.0,
                        },
                    ],
                }],
                links: vec![LinkChange {
                    t: 1_790_000_299_000,
                    up: true,
                    detail: String::new(),
                }],
                dropped: None,
            }],
        }
    }

    fn sealed_example() -> Sealed {
        seal(
            example_contents(),
            "line1-agent",
            1,
            ZERO_HASH,
            1_790_000_600_250,
            &key(7),
        )
        .unwrap()
    }

    const EXAMPLE_PAYLOAD: &str = r#"{"body":{"schema":"shopfloor.batch/1","agent":"line1-agent","seq":1,"prev":"0000000000000000000000000000000000000000000000000000000000000000","sealed":1790000600250,"from":1790000000000,"to":1790000600000,"devices":[{"id":"p1/e1/w1/l1/cnc-01","template":"cnc-modbus-generic","samples":[{"point":"spindle_load","samples":[{"t":1790000012500,"v":41.5},{"t":1790000300000,"err":"exception 02 (illegal data address)"}]}],"summaries":[{"point":"spindle_load","count":600,"errors":1,"first":{"t":1790000001000,"v":40.0},"last":{"t":1790000600000,"v":38.25},"min":0.0,"max":77.5}],"states":[{"from":1790000000000,"to":1790000420000,"state":"producing"},{"from":1790000420000,"to":1790000600000,"state":"idle"}],"counters":[{"role":"produced","point":"part_count","width_bits":16,"readings":[{"t":1790000000000,"v":65530.0},{"t":1790000600000,"v":4.0}]}],"links":[{"t":1790000299000,"up":true}]}]},"sig":"dorTsNvEBQKnz0Q/eU4fLki5j0dIQ3iuEX0jUxogRqLO3foXufogEcjpADlXy/KN0nHfHARLncVxvyKJatncCQ=="}"#;
    const EXAMPLE_HASH: &str = "8f269958a2978eb1dc65c5514c6bb852654502076467f4b102282472e9cd1735";
    const EXAMPLE_KEY: &str = "ed25519:6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw=";

    /// The payload is byte for byte the one in docs/PROTOCOL.md (key seed: 32 bytes of 7),
    /// so the documentation cannot drift from the encoder. The same example was checked
    /// against an independent Ed25519 implementation (Python `cryptography`).
    #[test]
    fn example_payload_matches_protocol_doc() {
        let s = sealed_example();
        assert_eq!(
            String::from_utf8(s.payload.clone()).unwrap(),
            EXAMPLE_PAYLOAD
        );
        assert_eq!(s.body_hash, EXAMPLE_HASH);
        assert!(doc_contains_len(s.payload.len()));
        assert_eq!(public_key_text(&key(7).verifying_key()), EXAMPLE_KEY);
        let doc = include_str!("../../docs/PROTOCOL.md");
        for needle in [EXAMPLE_PAYLOAD, EXAMPLE_HASH, EXAMPLE_KEY] {
            assert!(doc.contains(needle), "docs/PROTOCOL.md lacks {needle}");
        }
        let opened = open(EXAMPLE_PAYLOAD.as_bytes()).unwrap();
        opened
            .verify(&parse_public_key(EXAMPLE_KEY).unwrap())
            .unwrap();
        assert_eq!(opened.body_hash, EXAMPLE_HASH);
    }

    fn doc_contains_len(n: usize) -> bool {
        include_str!("../../docs/PROTOCOL.md").contains(&format!("(one line, {n} bytes)"))
    }

    /// Contents with every kind of value, escapes and the edges of the number types.
    fn varied_contents() -> Contents {
        let mut c = example_contents();
        let d = &mut c.devices[0];
        d.samples.push(PointSamples {
            point: "odd \"name\" \\ 主轴/\u{1}".to_owned(),
            samples: [
                SampleValue::Bool(true),
                SampleValue::Int(i64::MIN),
                SampleValue::Int(-1),
                SampleValue::Int(0),
                SampleValue::Int(i64::MAX),
                SampleValue::UInt(u64::MAX),
                SampleValue::Float(-0.0),
                SampleValue::Float(5.0),
                SampleValue::Float(1e300),
                SampleValue::Float(-2.5e-310),
                SampleValue::Text("程序 O1234 \"x\"\n".to_owned()),
                SampleValue::Text(String::new()),
            ]
            .into_iter()
            .enumerate()
            .map(|(i, v)| Sample {
                t: 1_790_000_000_000 + i as i64,
                v: Some(v),
                err: None,
            })
            .collect(),
        });
        d.dropped = Some(Dropped { samples: 3 });
        c.devices.push(DeviceData {
            id: "p1/e1/w1/l1/cnc-02".to_owned(),
            template: "t".to_owned(),
            samples: vec![],
            summaries: vec![],
            states: vec![],
            counters: vec![],
            links: vec![],
            dropped: None,
        });
        c
    }

    /// The outbox seals the stored encoding without decoding it: the payload must be byte
    /// for byte what sealing the decoded contents gives, for any contents.
    #[test]
    fn seal_encoded_is_seal() {
        let k = key(3);
        let empty = Contents {
            from: 0,
            to: 0,
            devices: vec![],
        };
        for (c, agent, seq, prev) in [
            (example_contents(), "line1-agent", 1, ZERO_HASH.to_owned()),
            (varied_contents(), "a \"quoted\" 代理", 7, "ab".repeat(32)),
            (empty, "a", 2, "0".repeat(64)),
        ] {
            let json = serde_json::to_vec(&c).unwrap();
            let a = seal(c.clone(), agent, seq, &prev, 99, &k).unwrap();
            let b = seal_encoded(&json, agent, seq, &prev, 99, &k).unwrap();
            assert_eq!(
                String::from_utf8(a.payload.clone()).unwrap(),
                String::from_utf8(b.payload.clone()).unwrap()
            );
            assert_eq!(a, b);
            let o = open(&b.payload).unwrap();
            o.verify(&k.verifying_key()).unwrap();
            assert_eq!(o.body.devices, c.devices);
        }
        let json = serde_json::to_vec(&example_contents()).unwrap();
        for (agent, seq, prev, path) in [
            ("", 1, ZERO_HASH.to_owned(), "body.agent"),
            ("a/b", 1, ZERO_HASH.to_owned(), "body.agent"),
            ("a", 0, ZERO_HASH.to_owned(), "body.seq"),
            ("a", 1, "ab".repeat(32), "body.prev"),
            ("a", 2, "AB".repeat(32), "body.prev"),
        ] {
            match seal_encoded(&json, agent, seq, &prev, 1, &k) {
                Err(BatchError::Malformed(e)) => assert_eq!(e.path, path, "{agent} {seq} {prev}"),
                other => panic!("{agent} {seq} {prev}: {other:?}"),
            }
        }
        for bad in [&b""[..], b"{}", b"{\"to\":1}", b"{\"from\":1"] {
            assert!(matches!(
                seal_encoded(bad, "a", 1, ZERO_HASH, 1, &k),
                Err(BatchError::Malformed(_))
            ));
        }
    }

    /// The hand-written decoder of sample values gives what the untagged derive gave.
    #[test]
    fn sample_values_decode_as_encoded() {
        for v in &varied_contents().devices[0].samples[1].samples {
            let json = serde_json::to_string(v).unwrap();
            let back: Sample = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, v, "{json}");
            if let Some(SampleValue::Float(f)) = back.v {
                // -0.0 == 0.0: compare the bits too.
                assert_eq!(
                    Some(f.to_bits()),
                    v.v.as_ref().and_then(|x| match x {
                        SampleValue::Float(g) => Some(g.to_bits()),
                        _ => None,
                    })
                );
            }
        }
        for (json, want) in [
            ("1", SampleValue::Int(1)),
            ("-1", SampleValue::Int(-1)),
            (
                "9223372036854775808",
                SampleValue::UInt(9_223_372_036_854_775_808),
            ),
            ("1.0", SampleValue::Float(1.0)),
            ("1e2", SampleValue::Float(100.0)),
            ("false", SampleValue::Bool(false)),
            ("\"\\u00e9\"", SampleValue::Text("é".to_owned())),
        ] {
            assert_eq!(
                serde_json::from_str::<SampleValue>(json).unwrap(),
                want,
                "{json}"
            );
        }
        for bad in ["null", "[1]", "{\"a\":1}"] {
            let e = serde_json::from_str::<SampleValue>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("expected a bool, a number or a string"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn seal_open_verify_round_trip() {
        let k = key(1);
        let s = seal(example_contents(), "a1", 1, ZERO_HASH, 5, &k).unwrap();
        assert_eq!(s.seq, 1);
        let o = open(&s.payload).unwrap();
        o.verify(&k.verifying_key()).unwrap();
        let c = example_contents();
        assert_eq!(o.body.schema, SCHEMA);
        assert_eq!(o.body.agent, "a1");
        assert_eq!(o.body.seq, 1);
        assert_eq!(o.body.prev, ZERO_HASH);
        assert_eq!(o.body.sealed, 5);
        assert_eq!((o.body.from, o.body.to), (c.from, c.to));
        assert_eq!(o.body.devices, c.devices);
        assert_eq!(o.body_hash, s.body_hash);
        assert_eq!(o.body_hash, body_hash(&o.body_bytes));
        // The body bytes are a slice of the payload, not a re-serialisation.
        let head = PAYLOAD_HEAD.len();
        assert_eq!(
            &s.payload[head..head + o.body_bytes.len()],
            &o.body_bytes[..]
        );
    }

    #[test]
    fn flipping_any_body_byte_fails() {
        let k = key(2);
        let s = seal(example_contents(), "a1", 3, &"ab".repeat(32), 9, &k).unwrap();
        let body_len = open(&s.payload).unwrap().body_bytes.len();
        for i in PAYLOAD_HEAD.len()..PAYLOAD_HEAD.len() + body_len {
            // One bit at every position; more patterns at every 5th (verification is slow
            // unoptimised).
            let flips: &[u8] = if i % 5 == 0 {
                &[0x01, 0x20, 0x80]
            } else {
                &[0x01]
            };
            for &flip in flips {
                let mut p = s.payload.clone();
                p[i] ^= flip;
                // Either it no longer parses, or it parses and the signature fails.
                if let Ok(o) = open(&p) {
                    assert_eq!(
                        o.verify(&k.verifying_key()),
                        Err(BatchError::BadSignature),
                        "byte {i} ^ {flip:#x} still verifies"
                    );
                }
            }
        }
    }

    #[test]
    fn flipping_signature_fails() {
        let k = key(2);
        let s = seal(example_contents(), "a1", 1, ZERO_HASH, 9, &k).unwrap();
        let mut o = open(&s.payload).unwrap();
        o.sig[10] ^= 1;
        assert_eq!(o.verify(&k.verifying_key()), Err(BatchError::BadSignature));
    }

    #[test]
    fn wrong_key_fails() {
        let s = seal(example_contents(), "a1", 1, ZERO_HASH, 9, &key(3)).unwrap();
        let o = open(&s.payload).unwrap();
        assert_eq!(
            o.verify(&key(4).verifying_key()),
            Err(BatchError::BadSignature)
        );
        o.verify(&key(3).verifying_key()).unwrap();
    }

    #[test]
    fn chain_hashes_link() {
        let k = key(5);
        let mut prev = ZERO_HASH.to_owned();
        let mut payloads = Vec::new();
        for seq in 1..=4 {
            let mut c = example_contents();
            c.from += seq as i64;
            let s = seal(c, "a1", seq, &prev, 100 + seq as i64, &k).unwrap();
            prev = s.body_hash.clone();
            payloads.push(s.payload);
        }
        let opened: Vec<Opened> = payloads.iter().map(|p| open(p).unwrap()).collect();
        assert!(opened[0].follows(ZERO_HASH));
        for w in opened.windows(2) {
            assert!(w[1].follows(&w[0].body_hash));
            assert_eq!(w[1].body.seq, w[0].body.seq + 1);
            assert_ne!(w[1].body_hash, w[0].body_hash);
        }
        // Every body hash is distinct and 64 lowercase hex digits.
        for o in &opened {
            assert_eq!(o.body_hash.len(), 64);
            assert!(
                o.body_hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            );
        }
    }

    /// A summary is left out exactly when the samples give it back, and stripping the samples
    /// puts it back: the stripped batch is the one that never omitted anything.
    /// A tally counts every reading, errors apart, and keeps first, last and extremes of the
    /// numeric ones (text is counted, not numeric); it stays small (one per point).
    #[test]
    fn tally_summarises_readings() {
        let mut t = Tally::default();
        assert_eq!(t.summary("p"), Summary::new("p"));
        t.record(1, Some(&SampleValue::Text("O1".into())));
        t.record(2, None);
        assert_eq!(
            (
                t.summary("p").count,
                t.summary("p").errors,
                t.summary("p").first
            ),
            (2, 1, None)
        );
        for (ms, v) in [(3, 5.0), (4, -0.0), (5, 7.5), (6, 6.0)] {
            t.record(ms, Some(&SampleValue::Float(v)));
        }
        t.record(7, Some(&SampleValue::Bool(true)));
        let s = t.summary("p");
        assert_eq!((s.point.as_str(), s.count, s.errors), ("p", 7, 1));
        assert_eq!(s.first, Some(Reading { t: 3, v: 5.0 }));
        assert_eq!(s.last, Some(Reading { t: 7, v: 1.0 }));
        assert_eq!((s.min, s.max), (Some(-0.0), Some(7.5)));
        assert!(s.min.is_some_and(|m| m.is_sign_negative()));
        assert!(std::mem::size_of::<Tally>() <= 64);
    }

    #[test]
    fn implied_summaries_are_omitted_and_restored_on_strip() {
        let samples: Vec<Sample> = [
            Some(SampleValue::Float(2.0)),
            None,
            Some(SampleValue::Text("x".to_owned())),
            Some(SampleValue::Int(-3)),
            Some(SampleValue::Bool(true)),
            Some(SampleValue::Float(-0.0)),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, v)| Sample {
            t: 10 + i as i64,
            err: v.is_none().then(|| "timeout".to_owned()),
            v,
        })
        .collect();
        let full = Summary::of_samples("a", &samples);
        assert_eq!(
            full,
            Summary {
                point: "a".to_owned(),
                count: 6,
                errors: 1,
                first: Some(Reading { t: 10, v: 2.0 }),
                last: Some(Reading { t: 15, v: -0.0 }),
                min: Some(-3.0),
                max: Some(2.0),
            }
        );
        let mut partial = full.clone();
        partial.point = "b".to_owned();
        partial.count += 4; // four readings of b were not reported
        let mut other = full.clone();
        other.point = "c".to_owned();
        other.max = Some(5.0); // not what c's samples give
        let mut d = example_contents().devices.remove(0);
        d.samples = ["a", "b", "c"]
            .into_iter()
            .map(|p| PointSamples {
                point: p.to_owned(),
                samples: samples.clone(),
            })
            .collect();
        d.summaries = vec![full.clone(), partial.clone(), other.clone()];
        let before = d.clone();
        d.omit_implied_summaries();
        assert_eq!(d.summaries, vec![partial.clone(), other.clone()]);
        let mut c = Contents {
            from: 0,
            to: 100,
            devices: vec![d],
        };
        assert_eq!(c.strip_samples(), 18);
        assert_eq!(c.devices[0].summaries, before.summaries);
        // Bit for bit, so the re-encoded batch is the same as one that never omitted.
        let mut never = Contents {
            from: 0,
            to: 100,
            devices: vec![before],
        };
        never.strip_samples();
        assert_eq!(
            serde_json::to_vec(&c).unwrap(),
            serde_json::to_vec(&never).unwrap()
        );
    }

    #[test]
    fn strip_samples_keeps_summaries_states_counters() {
        let mut c = example_contents();
        let before = c.clone();
        assert_eq!(c.sample_count(), 2);
        assert_eq!(c.strip_samples(), 2);
        assert_eq!(c.sample_count(), 0);
        let (d, b) = (&c.devices[0], &before.devices[0]);
        assert!(d.samples.is_empty());
        assert_eq!(d.summaries, b.summaries);
        assert_eq!(d.states, b.states);
        assert_eq!(d.counters, b.counters);
        assert_eq!(d.links, b.links);
        assert_eq!(d.dropped, Some(Dropped { samples: 2 }));
        // Stripping again drops nothing more and keeps the count.
        assert_eq!(c.strip_samples(), 0);
        assert_eq!(c.devices[0].dropped, Some(Dropped { samples: 2 }));
        // Stripped contents still seal and open.
        let s = seal(c, "a1", 1, ZERO_HASH, 0, &key(1)).unwrap();
        let o = open(&s.payload).unwrap();
        assert_eq!(o.body.devices[0].dropped, Some(Dropped { samples: 2 }));
        assert!(
            String::from_utf8(s.payload)
                .unwrap()
                .contains(r#""dropped":{"samples":2}"#)
        );
    }

    #[test]
    fn payload_is_deterministic() {
        let a = seal(example_contents(), "a1", 7, &"0f".repeat(32), 42, &key(9)).unwrap();
        let b = seal(example_contents(), "a1", 7, &"0f".repeat(32), 42, &key(9)).unwrap();
        assert_eq!(a, b);
        let c = seal(example_contents(), "a1", 7, &"0f".repeat(32), 43, &key(9)).unwrap();
        assert_ne!(a.payload, c.payload);
    }

    fn malformed_path(r: Result<impl std::fmt::Debug, BatchError>) -> String {
        match r {
            Err(BatchError::Malformed(e)) => e.path,
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn seal_refuses_what_open_would_refuse() {
        let k = key(1);
        let s = |c: Contents, agent: &str, seq: u64, prev: &str| seal(c, agent, seq, prev, 0, &k);
        let c = example_contents;
        assert_eq!(malformed_path(s(c(), "", 1, ZERO_HASH)), "body.agent");
        assert_eq!(malformed_path(s(c(), "a/b", 1, ZERO_HASH)), "body.agent");
        assert_eq!(malformed_path(s(c(), "a#", 1, ZERO_HASH)), "body.agent");
        assert_eq!(malformed_path(s(c(), "a", 0, ZERO_HASH)), "body.seq");
        assert_eq!(malformed_path(s(c(), "a", 2, "abc")), "body.prev");
        assert_eq!(
            malformed_path(s(c(), "a", 2, &"AB".repeat(32))),
            "body.prev"
        );
        assert_eq!(
            malformed_path(s(c(), "a", 1, &"ab".repeat(32))),
            "body.prev"
        );

        let mut bad = c();
        bad.to = bad.from - 1;
        assert_eq!(malformed_path(s(bad, "a", 1, ZERO_HASH)), "body.to");

        let mut bad = c();
        bad.devices[0].summaries[0].max = Some(f64::NAN);
        assert_eq!(
            malformed_path(s(bad, "a", 1, ZERO_HASH)),
            "body.devices[0].summaries[0].max"
        );

        let mut bad = c();
        bad.devices[0].samples[0].samples[0].v = Some(SampleValue::Float(f64::INFINITY));
        assert_eq!(
            malformed_path(s(bad, "a", 1, ZERO_HASH)),
            "body.devices[0].samples[0].samples[0].v"
        );

        let mut bad = c();
        bad.devices[0].counters[0].readings[1].v = f64::NEG_INFINITY;
        assert_eq!(
            malformed_path(s(bad, "a", 1, ZERO_HASH)),
            "body.devices[0].counters[0].readings[1].v"
        );

        let mut bad = c();
        bad.devices[0].states[1].to = 0;
        assert_eq!(
            malformed_path(s(bad, "a", 1, ZERO_HASH)),
            "body.devices[0].states[1].to"
        );

        let mut bad = c();
        let mut d = bad.devices[0].clone();
        d.id = "a".to_owned(); // sorts before "p1/…"
        bad.devices.push(d);
        assert_eq!(
            malformed_path(s(bad, "a", 1, ZERO_HASH)),
            "body.devices[1].id"
        );

        let mut bad = c();
        bad.devices.push(bad.devices[0].clone());
        assert_eq!(
            malformed_path(s(bad, "a", 1, ZERO_HASH)),
            "body.devices[1].id"
        );

        let mut bad = c();
        bad.devices[0].summaries[0].first = Some(Reading { t: 0, v: f64::NAN });
        assert_eq!(
            check_contents(&bad).map_err(|e| e.to_string()),
            Err("devices[0].summaries[0].first.v: must be a finite number".to_owned())
        );
        check_contents(&c()).unwrap();
    }

    /// Re-signs a hand-written body (for shapes `seal` refuses to produce).
    fn forge(body: &str, k: &SigningKey) -> Vec<u8> {
        let sig = BASE64.encode(k.sign(body.as_bytes()).to_bytes());
        format!("{{\"body\":{body},\"sig\":\"{sig}\"}}").into_bytes()
    }

    #[test]
    fn open_names_the_field_and_reason() {
        let k = key(1);
        let good = String::from_utf8(
            seal(example_contents(), "a1", 2, &"ab".repeat(32), 0, &k)
                .unwrap()
                .payload,
        )
        .unwrap();
        let body_of = |p: &str| {
            let start = PAYLOAD_HEAD.len();
            let end = p.rfind(",\"sig\":\"").unwrap();
            p[start..end].to_owned()
        };
        let body = body_of(&good);
        let err = |b: String| open(&forge(&b, &k)).unwrap_err().to_string();

        assert!(
            err(body.replace("shopfloor.batch/1", "shopfloor.batch/2"))
                .starts_with("body.schema: must be")
        );
        assert!(
            err(body.replace("\"seq\":2", "\"seq\":0")).starts_with("body.seq: must be at least 1")
        );
        assert!(
            err(body.replace("\"seq\":2", "\"seq\":-1")).starts_with("body.seq: invalid value")
        );
        assert!(
            err(body.replace("\"agent\":\"a1\"", "\"agent\":\"\""))
                .starts_with("body.agent: must not be empty")
        );
        assert!(
            err(body.replace("\"count\":600", "\"count\":600,\"extra\":1"))
                .starts_with("body.devices[0].summaries[0].extra: unknown field"),
            "{}",
            err(body.replace("\"count\":600", "\"count\":600,\"extra\":1"))
        );
        assert!(
            err(body.replace("\"state\":\"idle\"", "\"state\":\"sleeping\""))
                .starts_with("body.devices[0].states[1].state: unknown variant")
        );
        assert!(
            err(body.replace("\"v\":41.5", "\"v\":1e999"))
                .starts_with("body.devices[0].samples[0].samples[0].v")
        );
        assert!(
            err(body.replace("\"template\":\"cnc-modbus-generic\",", ""))
                .starts_with("body.devices[0]: missing field `template`"),
            "{}",
            err(body.replace("\"template\":\"cnc-modbus-generic\",", ""))
        );
        assert!(err(format!("{body} ")).starts_with("body: must be a JSON object"));
        assert!(err(format!("{body}x")).starts_with("body: must be a JSON object"));
        assert!(err(format!("{body}{{}}")).starts_with("body: trailing characters"));
        assert!(err("[1]".to_owned()).starts_with("body: must be a JSON object"));

        // Envelope problems.
        let e = |p: &[u8]| open(p).unwrap_err().to_string();
        assert!(
            e(b"").starts_with(": payload must start with")
                || e(b"").starts_with("payload must start with")
        );
        assert!(e(format!(" {good}").as_bytes()).starts_with("payload must start with"));
        assert!(e(format!("{good}\n").as_bytes()).starts_with("payload must end with"));
        assert!(
            e(good.replace(",\"sig\":\"", ",\"sg\":\"").as_bytes()).starts_with("sig: missing")
        );
        assert!(
            e(good.replace("\"sig\":\"", "\"sig\":\"!").as_bytes())
                .starts_with("sig: not standard base64")
        );
        assert!(
            e(format!("{{\"body\":{body},\"sig\":\"AAAA\"}}").as_bytes())
                .starts_with("sig: must be 64 bytes")
        );
    }

    #[test]
    fn open_never_panics_on_garbled_payloads() {
        let s = seal(example_contents(), "a1", 1, ZERO_HASH, 0, &key(1)).unwrap();
        let p = &s.payload;
        // Every truncation.
        for n in 0..p.len() {
            assert!(open(&p[..n]).is_err(), "prefix of {n} bytes opened");
        }
        // Every suffix.
        for n in 1..p.len() {
            assert!(open(&p[n..]).is_err());
        }
        // Byte garbling at every position, with a cheap deterministic generator.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..p.len() {
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut q = p.clone();
                q[i] = x.to_le_bytes()[0];
                let _ = open(&q);
                // Also insert and delete.
                let mut ins = p.clone();
                ins.insert(i, x.to_le_bytes()[1]);
                let _ = open(&ins);
                let mut del = p.clone();
                del.remove(i);
                let _ = open(&del);
            }
        }
        // Pathological inputs.
        let deep = format!(
            "{{\"body\":{}{},\"sig\":\"\"}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(open(deep.as_bytes()).is_err());
        assert!(open(b"{\"body\":,\"sig\":\"\"}").is_err());
        assert!(open(b"{\"body\":\"sig\":\"\"}").is_err());
        assert!(open(b"{\"body\":\"}").is_err());
        assert!(open(&[0xff; 64]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics_on_arbitrary_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)
        ) {
            let mut p = PAYLOAD_HEAD.to_vec();
            p.extend_from_slice(&bytes);
            let _ = open(&p);
            let _ = open(&bytes);
        }
    }

    #[test]
    fn public_key_text_round_trips() {
        let vk = key(7).verifying_key();
        let text = public_key_text(&vk);
        assert!(text.starts_with("ed25519:"));
        assert_eq!(parse_public_key(&text).unwrap(), vk);
        assert_eq!(parse_public_key(&format!(" {text}\n")).unwrap(), vk);
        assert!(matches!(
            parse_public_key("ed25519:"),
            Err(BatchError::BadKey(_))
        ));
        assert!(matches!(
            parse_public_key(&text[8..]),
            Err(BatchError::BadKey(_))
        ));
        assert!(matches!(
            parse_public_key("ed25519:AAAA"),
            Err(BatchError::BadKey(_))
        ));
        assert!(matches!(
            parse_public_key("ed25519:!!"),
            Err(BatchError::BadKey(_))
        ));
        // The identity point is a weak key.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let weak = format!("ed25519:{}", BASE64.encode(weak));
        assert!(matches!(
            parse_public_key(&weak),
            Err(BatchError::BadKey(_))
        ));
    }
}
