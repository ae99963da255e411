//! The gateway's batch decoder: `shopfloor_core::batch::open` and `Opened::verify`.
//!
//! 1. The input as a received MQTT payload: `open` never panics; what opens has the hash of its
//!    exact body bytes, verifies (or not) without panicking against a fixed key, and its
//!    contents seal again with that key into a payload that opens to the same body and
//!    verifies (the agent's `seal` accepts everything the gateway's `open` accepts).
//! 2. The input as the BODY of a payload correctly signed with the fixed key: if it opens, the
//!    located body bytes are exactly the input and the signature verifies.
//!
//! In role 1 the payload also goes through the gateway's ingest check
//! (`shopfloor_gateway::ingest::check`: topic, size, registry, key, scope, clock, then the
//! decoding into store rows) with one registered agent (`line1-agent`, the fixed key, scope
//! `p1`): a refusal has a stable reason code and a detail; an accepted batch is what `open`
//! and `verify` accept, and its rows are well-formed (one of number, text or error per sample;
//! times from 1970 up to the clock limit; non-empty dirty ranges).
//!
//! Input starting with `{` is used as is in both roles. Any other input picks one of the seed
//! bodies (first byte) and edits it with the rest (`shopfloor_fuzz::mutate`), so that most
//! bodies are well-formed JSON of the right shape with hostile values; the edited body is then
//! signed (role 2) and its payload checked as in role 1.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use shopfloor_core::batch::{Contents, SigningKey, body_hash, open, public_key_text, seal};
use shopfloor_gateway::config::IngestSection;
use shopfloor_gateway::ingest::{self, Trust};
use shopfloor_gateway::model::{Agent, Snapshot};

const TOPIC: &str = "shopfloor/v1/line1-agent/batch";
/// The gateway's clock: ten minutes after the seeds were sealed.
const RECEIVED: i64 = 1_790_001_800_000;

fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(|| {
        let agent = Agent {
            id: "line1-agent".into(),
            public_key: public_key_text(&key().verifying_key()),
            previous_keys: Vec::new(),
            revoked_keys: vec![public_key_text(
                &SigningKey::from_bytes(&[9; 32]).verifying_key(),
            )],
            scope: vec!["p1".into()],
            revoked: false,
        };
        let snapshot = Snapshot {
            entities: Default::default(),
            agents: [(agent.id.clone(), agent)].into(),
            products: Default::default(),
            targets: Vec::new(),
        };
        let trust = Trust::new();
        let problems = trust.replace(std::sync::Arc::new(snapshot));
        assert!(problems.is_empty(), "{problems:?}");
        trust
    })
}

/// The gateway's ingest check of a payload received on [`TOPIC`].
fn ingest_check(payload: &[u8]) {
    let cfg = IngestSection::default();
    match ingest::check(trust(), &cfg, "shopfloor/v1", TOPIC, payload, RECEIVED) {
        Err(q) => {
            assert!(ingest::REASONS.contains(&q.reason.as_str()), "{q:?}");
            assert!(!q.detail.is_empty(), "{q:?}");
            assert!(q.payload.len() <= ingest::QUARANTINE_PAYLOAD_MAX);
        }
        Ok(nb) => {
            let opened = match open(payload) {
                Ok(o) => o,
                Err(e) => panic!("ingest accepted a payload that does not open: {e}"),
            };
            assert!(opened.verify(&key().verifying_key()).is_ok());
            assert_eq!(nb.agent, opened.body.agent);
            assert_eq!(nb.agent, "line1-agent");
            assert_eq!(u64::try_from(nb.seq).ok(), Some(opened.body.seq));
            assert_eq!(nb.body_hash, opened.body_hash);
            assert_eq!(nb.payload, payload);
            let limit = RECEIVED + i64::try_from(cfg.max_future_s * 1000).unwrap_or(i64::MAX);
            let time_ok = |t: i64| (0..=limit).contains(&t);
            for r in &nb.samples {
                let set = usize::from(r.num.is_some())
                    + usize::from(r.text.is_some())
                    + usize::from(r.err.is_some());
                assert_eq!(set, 1, "{r:?}");
                assert!(time_ok(r.t), "{r:?}");
            }
            for r in &nb.states {
                assert!(time_ok(r.from) && time_ok(r.to), "{r:?}");
            }
            for r in &nb.readings {
                assert!(time_ok(r.t), "{r:?}");
            }
            for r in &nb.links {
                assert!(time_ok(r.t), "{r:?}");
            }
            for d in &nb.dirty {
                assert!(d.from < d.to, "{d:?}");
            }
        }
    }
}

const SEEDS: &[&[u8]] = &[
    include_bytes!("../seeds/batch_open/doc-example.json"),
    include_bytes!("../seeds/batch_open/seq2-meter.json"),
];

/// The bodies of the seed payloads.
fn bodies() -> &'static [Value] {
    static BODIES: OnceLock<Vec<Value>> = OnceLock::new();
    BODIES.get_or_init(|| {
        SEEDS
            .iter()
            .filter_map(|p| open(p).ok())
            .filter_map(|o| serde_json::from_slice(&o.body_bytes).ok())
            .collect()
    })
}

/// The fixed key of the seeds in `fuzz/seeds/batch_open/` (`SigningKey::from_bytes(&[7; 32])`).
fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn as_payload(data: &[u8]) {
    ingest_check(data);
    let Ok(opened) = open(data) else {
        return;
    };
    assert_eq!(opened.body_hash, body_hash(&opened.body_bytes));
    let key = key();
    let _ = opened.verify(&key.verifying_key());
    let _ = opened.follows(&opened.body.prev);
    let b = opened.body.clone();
    let contents = Contents {
        from: b.from,
        to: b.to,
        devices: b.devices,
    };
    let sealed = match seal(contents, &b.agent, b.seq, &b.prev, b.sealed, &key) {
        Ok(s) => s,
        Err(e) => panic!("opened, but does not seal again: {e}"),
    };
    let again = match open(&sealed.payload) {
        Ok(o) => o,
        Err(e) => panic!("sealed, but does not open: {e}"),
    };
    assert_eq!(again.body, opened.body, "body changed by seal → open");
    assert_eq!(again.body_hash, sealed.body_hash);
    assert!(again.verify(&key.verifying_key()).is_ok());
}

/// Returns the signed payload.
fn as_body(data: &[u8]) -> Vec<u8> {
    use ed25519_dalek::Signer as _;
    let key = key();
    let sig = key.sign(data).to_bytes();
    let mut payload = Vec::with_capacity(data.len() + 110);
    payload.extend_from_slice(b"{\"body\":");
    payload.extend_from_slice(data);
    payload.extend_from_slice(b",\"sig\":\"");
    payload.extend_from_slice(base64(&sig).as_bytes());
    payload.extend_from_slice(b"\"}");
    if let Ok(opened) = open(&payload) {
        assert_eq!(opened.body_bytes, data, "body located wrongly");
        assert!(opened.verify(&key.verifying_key()).is_ok());
    }
    payload
}

/// Standard base64 with padding (the wire format's `sig`).
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(c.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(c.get(2).copied().unwrap_or(0));
        for k in 0..4 {
            if k <= c.len() {
                out.push(char::from(A[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| match data.first() {
    None => {}
    Some(b'{') => {
        as_payload(data);
        as_body(data);
    }
    Some(&pick) => {
        let bodies = bodies();
        assert!(!bodies.is_empty(), "the seed payloads do not open");
        let mut body = bodies[usize::from(pick) % bodies.len()].clone();
        shopfloor_fuzz::mutate(&mut body, &data[1..]);
        let payload = as_body(body.to_string().as_bytes());
        as_payload(&payload);
    }
});
