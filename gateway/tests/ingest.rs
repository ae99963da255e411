//! Verified ingest: forged, unsigned, replayed and malformed payloads get their reason code and
//! a detail naming the field (pure `check`), the ingest loop acknowledges only after commit
//! and retries failed commits (in-memory store with injected failures), and, against a real
//! SQLite store, bad payloads are quarantined, nothing of them is stored as data, metrics
//! count them, and a valid batch sent afterwards is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use shopfloor_core::batch::{
    self, Contents, CounterReadings, DeviceData, LinkChange, PointSamples, Sample, SampleValue,
    Sealed, StateSpan, ZERO_HASH,
};
use shopfloor_core::evidence::State;
use shopfloor_gateway::config::IngestSection;
use shopfloor_gateway::ingest::{self, Ack, Delivery, IngestStore, Trust};
use shopfloor_gateway::metrics::Metrics;
use shopfloor_gateway::model::{Agent, Snapshot};
use shopfloor_store::{Chain, Ms, NewBatch, Outcome, QuarantineRow, StoreError};
use tokio::sync::mpsc;

const PREFIX: &str = "shopfloor/v1";
/// The gateway's clock in these tests.
const NOW: Ms = 1_790_000_600_000;
const MIN: Ms = 60_000;
const HOUR: Ms = 3_600_000;
const CNC: &str = "p1/e1/w1/l1/cnc-01";
const METER: &str = "p1/e1/w1/m-01";

// --- keys (through the agent's identity module: ed25519-dalek is not a gateway dependency) ---

fn key_dir(seed: u8) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let path = shopfloor_agent::identity::key_path(dir.path());
    let text = format!(
        "{}\n{}\n",
        shopfloor_agent::identity::KEY_HEADER,
        BASE64.encode([seed; 32])
    );
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// `ed25519:<base64>` of the key with this seed.
fn public_key(seed: u8) -> String {
    let dir = key_dir(seed);
    let key = shopfloor_agent::identity::load(dir.path()).unwrap();
    batch::public_key_text(&key.verifying_key())
}

/// Seals `contents` with the key of `seed`.
fn seal(seed: u8, contents: Contents, agent: &str, seq: u64, prev: &str, sealed: Ms) -> Sealed {
    let dir = key_dir(seed);
    let key = shopfloor_agent::identity::load(dir.path()).unwrap();
    batch::seal(contents, agent, seq, prev, sealed, &key).unwrap()
}

// --- data ---

/// Ten minutes of a CNC (samples of every kind, a state span that started hours earlier,
/// a part counter, a link event) and a meter.
fn contents(from: Ms) -> Contents {
    let to = from + 10 * MIN;
    let s = |t: Ms, v: Option<SampleValue>, err: Option<&str>| Sample {
        t,
        v,
        err: err.map(str::to_owned),
    };
    Contents {
        from,
        to,
        devices: vec![
            DeviceData {
                id: CNC.to_owned(),
                template: "cnc-modbus-generic".to_owned(),
                samples: vec![
                    PointSamples {
                        point: "program".to_owned(),
                        samples: vec![s(
                            from + 1000,
                            Some(SampleValue::Text("O1234".into())),
                            None,
                        )],
                    },
                    PointSamples {
                        point: "running".to_owned(),
                        samples: vec![
                            s(from + 2000, Some(SampleValue::Bool(true)), None),
                            s(from + 3000, Some(SampleValue::Bool(false)), None),
                        ],
                    },
                    PointSamples {
                        point: "spindle_load".to_owned(),
                        samples: vec![
                            s(from + 12_500, Some(SampleValue::Float(41.5)), None),
                            s(
                                from + 30_000,
                                None,
                                Some("exception 02 (illegal data address)"),
                            ),
                            s(from + 40_000, Some(SampleValue::Int(-3)), None),
                        ],
                    },
                ],
                summaries: vec![],
                states: vec![
                    // Closed now, started three hours ago.
                    StateSpan {
                        from: from - 3 * HOUR,
                        to: from + 7 * MIN,
                        state: State::Producing,
                    },
                    StateSpan {
                        from: from + 7 * MIN,
                        to,
                        state: State::PlannedDown,
                    },
                ],
                counters: vec![CounterReadings {
                    role: "produced".to_owned(),
                    point: "part_count".to_owned(),
                    width_bits: Some(16),
                    rollover: None,
                    readings: vec![
                        batch::Reading {
                            t: from,
                            v: 65_530.0,
                        },
                        batch::Reading { t: to, v: 4.0 },
                    ],
                }],
                links: vec![LinkChange {
                    t: from + 5000,
                    up: true,
                    detail: "connected".to_owned(),
                }],
                dropped: None,
            },
            DeviceData {
                id: METER.to_owned(),
                template: "eastron-sdm630".to_owned(),
                samples: vec![],
                summaries: vec![],
                states: vec![],
                counters: vec![CounterReadings {
                    role: "electricity".to_owned(),
                    point: "energy_import_kwh".to_owned(),
                    width_bits: None,
                    rollover: Some(1e9),
                    readings: vec![
                        batch::Reading {
                            t: from + MIN,
                            v: 1000.0,
                        },
                        batch::Reading {
                            t: from + 9 * MIN,
                            v: 1004.5,
                        },
                    ],
                }],
                links: vec![],
                dropped: None,
            },
        ],
    }
}

/// Agents: `a1` (seed 1, scope p1/e1/w1), `a2` (seed 2, same scope), `old` (seed 3, revoked),
/// `broken` (a key that does not parse).
fn trust() -> Trust {
    let agent = |id: &str, key: String, revoked: bool| Agent {
        id: id.to_owned(),
        public_key: key,
        previous_keys: Vec::new(),
        revoked_keys: Vec::new(),
        scope: vec!["p1/e1/w1".to_owned()],
        revoked,
    };
    let mut agents = BTreeMap::new();
    agents.insert("a1".to_owned(), agent("a1", public_key(1), false));
    agents.insert("a2".to_owned(), agent("a2", public_key(2), false));
    agents.insert("old".to_owned(), agent("old", public_key(3), true));
    agents.insert(
        "broken".to_owned(),
        agent("broken", "ed25519:AAAA".to_owned(), false),
    );
    let t = Trust::new();
    let problems = t.replace(Arc::new(Snapshot {
        agents,
        ..Snapshot::default()
    }));
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("broken") && problems[0].contains("public_key"));
    t
}

fn cfg() -> IngestSection {
    IngestSection {
        max_batches_per_commit: 64,
        commit_wait_ms: 5,
        max_payload_bytes: 64 * 1024,
        max_future_s: 300,
        commits_in_flight: Some(2),
    }
}

fn topic(agent: &str) -> String {
    format!("{PREFIX}/{agent}/batch")
}

/// A valid batch of `a1`, seq 1.
fn good(seq: u64, prev: &str) -> Sealed {
    seal(
        1,
        contents(NOW - 10 * MIN - 1000),
        "a1",
        seq,
        prev,
        NOW - 500,
    )
}

fn text(p: &[u8]) -> String {
    String::from_utf8(p.to_vec()).unwrap()
}

fn body_of(payload: &str) -> String {
    let start = "{\"body\":".len();
    let end = payload.rfind(",\"sig\":\"").unwrap();
    payload[start..end].to_owned()
}

fn sig_of(payload: &str) -> String {
    let i = payload.rfind(",\"sig\":\"").unwrap() + ",\"sig\":\"".len();
    payload[i..payload.len() - 2].to_owned()
}

/// A payload with `body` and a well-formed signature that signs nothing.
fn forged(body: &str) -> Vec<u8> {
    format!(
        "{{\"body\":{body},\"sig\":\"{}\"}}",
        BASE64.encode([7u8; 64])
    )
    .into_bytes()
}

/// One bad payload: a name, the topic, the payload, the expected reason and a string the
/// detail must contain (the field).
struct Case {
    name: &'static str,
    topic: String,
    payload: Vec<u8>,
    reason: &'static str,
    field: &'static str,
}

fn bad_cases() -> Vec<Case> {
    let g = good(1, ZERO_HASH);
    let gp = text(&g.payload);
    let body = body_of(&gp);
    let other = seal(1, contents(NOW - 20 * MIN), "a1", 1, ZERO_HASH, NOW - 400);
    let case = |name, topic: String, payload: Vec<u8>, reason, field| Case {
        name,
        topic,
        payload,
        reason,
        field,
    };
    let mut cases = vec![
        case(
            "wrong key",
            topic("a1"),
            seal(9, contents(NOW - 11 * MIN), "a1", 1, ZERO_HASH, NOW).payload,
            "bad_signature",
            "sig:",
        ),
        case(
            "signature of another body",
            topic("a1"),
            format!(
                "{{\"body\":{body},\"sig\":\"{}\"}}",
                sig_of(&text(&other.payload))
            )
            .into_bytes(),
            "bad_signature",
            "sig:",
        ),
        case(
            "flipped byte in the body",
            topic("a1"),
            gp.replace("\"v\":41.5", "\"v\":41.6").into_bytes(),
            "bad_signature",
            "sig:",
        ),
        case(
            "truncated JSON",
            topic("a1"),
            g.payload[..g.payload.len() / 2].to_vec(),
            "malformed",
            "payload:",
        ),
        case(
            "empty payload",
            topic("a1"),
            Vec::new(),
            "malformed",
            "payload:",
        ),
        case(
            "not JSON",
            topic("a1"),
            b"hello, gateway".to_vec(),
            "malformed",
            "payload:",
        ),
        case(
            "body.agent differs from the topic",
            topic("a1"),
            seal(2, contents(NOW - 11 * MIN), "a2", 1, ZERO_HASH, NOW).payload,
            "agent_mismatch",
            "body.agent:",
        ),
        case(
            "unknown agent",
            topic("stranger"),
            seal(5, contents(NOW - 11 * MIN), "stranger", 1, ZERO_HASH, NOW).payload,
            "unknown_agent",
            "topic:",
        ),
        case(
            "revoked agent",
            topic("old"),
            seal(3, contents(NOW - 11 * MIN), "old", 1, ZERO_HASH, NOW).payload,
            "revoked_agent",
            "topic:",
        ),
        case(
            "registered key unusable",
            topic("broken"),
            seal(4, contents(NOW - 11 * MIN), "broken", 1, ZERO_HASH, NOW).payload,
            "unknown_agent",
            "public_key",
        ),
        case(
            "seq 0",
            topic("a1"),
            forged(&body.replace("\"seq\":1", "\"seq\":0")),
            "malformed",
            "body.seq:",
        ),
        case(
            "seq above i64",
            topic("a1"),
            forged(
                &body
                    .replace("\"seq\":1", "\"seq\":18446744073709551615")
                    .replace(ZERO_HASH, &"ab".repeat(32)),
            ),
            "malformed",
            "body.seq:",
        ),
        case(
            "prev not hex",
            topic("a1"),
            forged(
                &body
                    .replace("\"seq\":1", "\"seq\":2")
                    .replace(ZERO_HASH, &"zz".repeat(32)),
            ),
            "malformed",
            "body.prev:",
        ),
        case(
            "from after to",
            topic("a1"),
            forged(&body.replace(
                &format!("\"from\":{}", NOW - 10 * MIN - 1000),
                &format!("\"from\":{}", NOW),
            )),
            "malformed",
            "body.to:",
        ),
        case(
            "NaN smuggled as a string",
            topic("a1"),
            forged(&body.replace("\"v\":65530.0", "\"v\":\"NaN\"")),
            "malformed",
            "body.devices[0].counters[0].readings[0].v",
        ),
        case(
            "bare NaN token",
            topic("a1"),
            forged(&body.replace("\"v\":65530.0", "\"v\":NaN")),
            "malformed",
            "body.devices[0].counters[0].readings[0].v",
        ),
        case(
            "unknown field",
            topic("a1"),
            forged(&body.replace(
                "\"template\":\"eastron-sdm630\"",
                "\"template\":\"eastron-sdm630\",\"shadow\":1",
            )),
            "malformed",
            "body.devices[1].shadow: unknown field",
        ),
        case(
            "oversized payload",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[0].samples[0].samples[0].v =
                    Some(SampleValue::Text("x".repeat(70 * 1024)));
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "too_large",
            "ingest.max_payload_bytes",
        ),
        case(
            "wrong schema",
            topic("a1"),
            forged(&body.replace("shopfloor.batch/1", "shopfloor.batch/2")),
            "malformed",
            "body.schema:",
        ),
        case(
            "topic without /batch",
            format!("{PREFIX}/a1"),
            g.payload.clone(),
            "bad_topic",
            "topic:",
        ),
        case(
            "status topic",
            format!("{PREFIX}/a1/status"),
            g.payload.clone(),
            "bad_topic",
            "topic:",
        ),
        case(
            "topic of another prefix",
            "other/v1/a1/batch".to_owned(),
            g.payload.clone(),
            "bad_topic",
            "topic:",
        ),
        case(
            "sealed far in the future",
            topic("a1"),
            seal(
                1,
                contents(NOW - 11 * MIN),
                "a1",
                1,
                ZERO_HASH,
                NOW + 3_600_000,
            )
            .payload,
            "clock_skew",
            "body.sealed:",
        ),
        case(
            "sample time far in the future",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[0].samples[2].samples[0].t = NOW + 86_400_000;
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "clock_skew",
            "body.devices[0].samples[2].samples[0].t:",
        ),
        case(
            "time before 1970",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[1].counters[0].readings[0].t = -5;
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "malformed",
            "body.devices[1].counters[0].readings[0].t:",
        ),
        case(
            "device outside the agent's scope",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[1].id = "p1/e2/w1/m-07".to_owned();
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "device_out_of_scope",
            "body.devices[1].id: device \"p1/e2/w1/m-07\"",
        ),
        case(
            "device whose path only starts like the scope",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[1].id = "p1/e1/w1x/m-01".to_owned();
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "device_out_of_scope",
            "p1/e1/w1x/m-01",
        ),
        case(
            "sample with both v and err",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[0].samples[2].samples[1].v = Some(SampleValue::Float(1.0));
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "malformed",
            "body.devices[0].samples[2].samples[1]: has both v and err",
        ),
        case(
            "sample with neither v nor err",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[0].samples[2].samples[1].err = None;
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "malformed",
            "body.devices[0].samples[2].samples[1]: has neither",
        ),
        case(
            "counter width 0",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[0].counters[0].width_bits = Some(0);
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "malformed",
            "body.devices[0].counters[0].width_bits:",
        ),
        case(
            "negative rollover",
            topic("a1"),
            {
                let mut c = contents(NOW - 11 * MIN);
                c.devices[1].counters[0].rollover = Some(-1.0);
                seal(1, c, "a1", 1, ZERO_HASH, NOW).payload
            },
            "malformed",
            "body.devices[1].counters[0].rollover:",
        ),
        case(
            "signature not base64",
            topic("a1"),
            gp.replace(&sig_of(&gp), "!!!!").into_bytes(),
            "malformed",
            "sig:",
        ),
    ];
    // Non-UTF-8 bytes inside a string of an otherwise good payload.
    let mut p = g.payload.clone();
    let at = text(&p).find("O1234").unwrap();
    p[at] = 0xff;
    p[at + 1] = 0xfe;
    cases.push(case(
        "non-UTF-8 bytes",
        topic("a1"),
        p,
        "malformed",
        "body.devices[0].samples[0].samples[0]",
    ));
    cases
}

#[test]
fn every_bad_payload_gets_its_reason_and_field() {
    let trust = trust();
    let cfg = cfg();
    let cases = bad_cases();
    assert!(cases.len() >= 20);
    for c in &cases {
        let q = match ingest::check(&trust, &cfg, PREFIX, &c.topic, &c.payload, NOW) {
            Ok(b) => panic!("{}: accepted as seq {}", c.name, b.seq),
            Err(q) => q,
        };
        assert_eq!(q.reason, c.reason, "{}: {}", c.name, q.detail);
        assert!(
            q.detail.contains(c.field),
            "{}: detail {:?} does not name {:?}",
            c.name,
            q.detail,
            c.field
        );
        assert!(ingest::REASONS.contains(&q.reason.as_str()));
        assert_eq!(q.topic, c.topic);
        assert_eq!(q.received, NOW);
        assert_eq!(
            q.payload,
            c.payload[..c.payload.len().min(ingest::QUARANTINE_PAYLOAD_MAX)]
        );
    }
    // The agent is named when the topic has one; seq when the body could be read.
    let find = |name: &str| cases.iter().find(|c| c.name == name).unwrap();
    let q = |c: &Case| ingest::check(&trust, &cfg, PREFIX, &c.topic, &c.payload, NOW).unwrap_err();
    let r = q(find("flipped byte in the body"));
    assert_eq!((r.agent.as_deref(), r.seq), (Some("a1"), Some(1)));
    let r = q(find("empty payload"));
    assert_eq!((r.agent.as_deref(), r.seq), (Some("a1"), None));
    let r = q(find("topic without /batch"));
    assert_eq!(r.agent, None);
}

/// Key rotation and revocation: the current key, a retired key inside its overlap window
/// (judged by the gateway's receive time), a retired key after it, a revoked key, an unknown
/// key.
#[test]
fn rotated_retired_and_revoked_keys() {
    use shopfloor_gateway::ingest::{AgentKeys, KeyUsed};
    use shopfloor_gateway::model::RetiredKey;
    let until = |ms: Ms| jiff::Timestamp::from_millisecond(ms).unwrap().to_string();
    let agent = Agent {
        id: "r1".to_owned(),
        public_key: public_key(5),
        previous_keys: vec![
            RetiredKey {
                public_key: public_key(4),
                until: until(NOW + HOUR),
            },
            RetiredKey {
                public_key: public_key(6),
                until: until(NOW - 1),
            },
        ],
        revoked_keys: vec![public_key(7)],
        scope: vec!["p1/e1/w1".to_owned()],
        revoked: false,
    };
    let t = Trust::new();
    let problems = t.replace(Arc::new(Snapshot {
        agents: BTreeMap::from([("r1".to_owned(), agent.clone())]),
        ..Snapshot::default()
    }));
    assert!(problems.is_empty(), "{problems:?}");
    let cfg = cfg();
    let signed = |seed: u8, seq: u64| {
        seal(
            seed,
            contents(NOW - 10 * MIN - 1000),
            "r1",
            seq,
            ZERO_HASH,
            NOW - 500,
        )
        .payload
    };
    // The quarantine row (or nothing), boxed: a `Result` with the whole row is large.
    let check = |seed: u8, received: Ms| {
        ingest::check(&t, &cfg, PREFIX, &topic("r1"), &signed(seed, 1), received)
            .map(|_| ())
            .map_err(Box::new)
    };
    assert!(check(5, NOW).is_ok(), "current key");
    assert!(check(4, NOW).is_ok(), "retired key inside its window");
    let q = check(4, NOW + HOUR).unwrap_err();
    assert_eq!(q.reason, ingest::EXPIRED_KEY, "{}", q.detail);
    assert!(
        q.detail.starts_with("sig: signed with ed25519:"),
        "{}",
        q.detail
    );
    assert!(q.detail.contains(&public_key(4)), "{}", q.detail);
    let q = check(6, NOW).unwrap_err();
    assert_eq!(q.reason, ingest::EXPIRED_KEY, "{}", q.detail);
    let q = check(7, NOW).unwrap_err();
    assert_eq!(q.reason, ingest::REVOKED_KEY, "{}", q.detail);
    assert!(q.detail.contains(&public_key(7)), "{}", q.detail);
    let q = check(8, NOW).unwrap_err();
    assert_eq!(q.reason, ingest::BAD_SIGNATURE, "{}", q.detail);

    // The same rules for the auditor's re-verification, which also says which key signed.
    let keys = AgentKeys::of(&agent);
    let mut seq = None;
    let (_, _, used) = ingest::verify_with_keys("r1", &keys, &signed(4, 2), NOW, &mut seq).unwrap();
    assert_eq!((used, seq), (KeyUsed::Previous, Some(2)));
    let (_, _, used) = ingest::verify_with_keys("r1", &keys, &signed(5, 3), NOW, &mut seq).unwrap();
    assert_eq!(used, KeyUsed::Current);
    // Revocation wins even where the key would otherwise be accepted.
    let mut both = agent.clone();
    both.previous_keys[0].public_key = public_key(7);
    let r = ingest::verify_with_keys("r1", &AgentKeys::of(&both), &signed(7, 4), NOW, &mut seq)
        .unwrap_err();
    assert_eq!(r.reason, ingest::REVOKED_KEY);
}

#[test]
fn a_flipped_bit_anywhere_in_the_body_is_never_accepted() {
    let trust = trust();
    let cfg = cfg();
    let g = good(1, ZERO_HASH);
    let body_len = body_of(&text(&g.payload)).len();
    let head = "{\"body\":".len();
    // Every 7th byte keeps the test quick in debug builds.
    for i in (head..head + body_len).step_by(7) {
        let mut p = g.payload.clone();
        p[i] ^= 0x01;
        let r = ingest::check(&trust, &cfg, PREFIX, &topic("a1"), &p, NOW);
        let q = r.expect_err("a modified payload was accepted");
        assert!(
            [
                "bad_signature",
                "malformed",
                "agent_mismatch",
                "device_out_of_scope",
                "clock_skew"
            ]
            .contains(&q.reason.as_str()),
            "byte {i}: {} {}",
            q.reason,
            q.detail
        );
    }
}

#[test]
fn a_valid_batch_decodes_into_rows_and_dirty_ranges() {
    let trust = trust();
    let from = NOW - 10 * MIN - 1000;
    let g = good(1, ZERO_HASH);
    let b = ingest::check(&trust, &cfg(), PREFIX, &topic("a1"), &g.payload, NOW).unwrap();
    assert_eq!(b.agent, "a1");
    assert_eq!(b.seq, 1);
    assert_eq!(b.body_hash, g.body_hash);
    assert_eq!(b.prev, ZERO_HASH);
    assert_eq!(
        (b.from, b.to, b.sealed, b.received),
        (from, from + 10 * MIN, NOW - 500, NOW)
    );
    assert_eq!(b.payload, g.payload);

    let sample = |point: &str, t: Ms| {
        b.samples
            .iter()
            .find(|s| s.point == point && s.t == t)
            .unwrap_or_else(|| panic!("no sample {point}@{t}"))
    };
    let s = sample("program", from + 1000);
    assert_eq!(
        (s.num, s.is_bool, s.text.as_deref(), s.err.as_deref()),
        (None, false, Some("O1234"), None)
    );
    let s = sample("running", from + 2000);
    assert_eq!(
        (s.num, s.is_bool, s.text.as_deref()),
        (Some(1.0), true, None)
    );
    let s = sample("running", from + 3000);
    assert_eq!((s.num, s.is_bool), (Some(0.0), true));
    let s = sample("spindle_load", from + 12_500);
    assert_eq!((s.num, s.is_bool), (Some(41.5), false));
    let s = sample("spindle_load", from + 30_000);
    assert_eq!(
        (s.num, s.text.as_deref(), s.err.as_deref()),
        (None, None, Some("exception 02 (illegal data address)"))
    );
    let s = sample("spindle_load", from + 40_000);
    assert_eq!(s.num, Some(-3.0));
    assert_eq!(b.samples.len(), 6);
    assert!(b.samples.iter().all(|s| s.device == CNC));

    assert_eq!(b.states.len(), 2);
    assert_eq!(b.states[0].state, "producing");
    assert_eq!(b.states[1].state, "planned_down");
    assert_eq!(b.states[0].from, from - 3 * HOUR);

    assert_eq!(b.readings.len(), 4);
    let r = b
        .readings
        .iter()
        .find(|r| r.device == CNC && r.t == from)
        .unwrap();
    assert_eq!(
        (
            r.role.as_str(),
            r.point.as_str(),
            r.v,
            r.width_bits,
            r.rollover
        ),
        ("produced", "part_count", 65_530.0, Some(16), None)
    );
    let r = b.readings.iter().find(|r| r.device == METER).unwrap();
    assert_eq!(
        (r.role.as_str(), r.width_bits, r.rollover),
        ("electricity", None, Some(1e9))
    );

    assert_eq!(b.links.len(), 1);
    assert_eq!(
        (b.links[0].up, b.links[0].detail.as_str()),
        (true, "connected")
    );

    // The CNC's dirty range starts where its three-hour state span starts and ends after its
    // last reading (the window end, inclusive); the meter's covers its two readings.
    let dirty: BTreeMap<_, _> = b
        .dirty
        .iter()
        .map(|d| (d.device.as_str(), (d.from, d.to)))
        .collect();
    assert_eq!(dirty.len(), 2);
    assert_eq!(dirty[CNC], (from - 3 * HOUR, from + 10 * MIN + 1));
    assert_eq!(dirty[METER], (from + MIN, from + 9 * MIN + 1));
}

#[test]
fn scopes_match_whole_path_segments() {
    let mut agents = BTreeMap::new();
    agents.insert(
        "a1".to_owned(),
        Agent {
            id: "a1".to_owned(),
            public_key: public_key(1),
            previous_keys: Vec::new(),
            revoked_keys: Vec::new(),
            scope: vec![
                "p1/e9".to_owned(),
                CNC.to_owned(),
                "p1/e1/w1/m-01".to_owned(),
            ],
            revoked: false,
        },
    );
    let trust = Trust::new();
    assert!(
        trust
            .replace(Arc::new(Snapshot {
                agents,
                ..Snapshot::default()
            }))
            .is_empty()
    );
    // Both devices are named exactly by a scope.
    let g = good(1, ZERO_HASH);
    ingest::check(&trust, &cfg(), PREFIX, &topic("a1"), &g.payload, NOW).unwrap();
    // Replacing the trust takes effect at once: now the agent is unknown.
    trust.replace(Arc::new(Snapshot::default()));
    let q = ingest::check(&trust, &cfg(), PREFIX, &topic("a1"), &g.payload, NOW).unwrap_err();
    assert_eq!(q.reason, "unknown_agent");
}

// --- the ingest loop against an in-memory store ---

/// An in-memory store: dedupes by (agent, seq), fails while `failing` is set.
#[derive(Default)]
struct MemStore {
    stored: Mutex<BTreeMap<(String, i64), NewBatch>>,
    quarantined: Mutex<Vec<QuarantineRow>>,
    failing: AtomicBool,
    calls: AtomicUsize,
    transactions: Mutex<Vec<usize>>,
}

impl IngestStore for MemStore {
    async fn commit_batches(&self, batches: &[NewBatch]) -> shopfloor_store::Result<Vec<Outcome>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Db("injected failure".to_owned()));
        }
        let mut stored = self.stored.lock().unwrap();
        self.transactions.lock().unwrap().push(batches.len());
        Ok(batches
            .iter()
            .map(|b| {
                let k = (b.agent.clone(), b.seq);
                match stored.get(&k) {
                    Some(s) => Outcome::Duplicate {
                        same_hash: s.body_hash == b.body_hash,
                    },
                    None => {
                        stored.insert(k, b.clone());
                        Outcome::Stored {
                            chain: Chain::Linked,
                        }
                    }
                }
            })
            .collect())
    }
    async fn commit_quarantine(&self, rows: &[QuarantineRow]) -> shopfloor_store::Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Db("injected failure".to_owned()));
        }
        self.quarantined.lock().unwrap().extend_from_slice(rows);
        Ok(())
    }
}

type Acks = Arc<Mutex<Vec<usize>>>;

fn delivery(topic: String, payload: Vec<u8>, id: usize, acks: &Acks) -> Delivery {
    let acks = acks.clone();
    Delivery {
        topic,
        payload,
        received: NOW,
        ack: Ack::new(move || acks.lock().unwrap().push(id)),
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn metric(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
}

#[tokio::test]
async fn nothing_is_acknowledged_before_the_commit_succeeds() {
    let store = Arc::new(MemStore::default());
    store.failing.store(true, Ordering::SeqCst);
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(16);
    let task = {
        let (store, metrics) = (store.clone(), metrics.clone());
        tokio::spawn(async move {
            ingest::run_with(
                &*store,
                Arc::new(trust()),
                metrics,
                cfg(),
                PREFIX.to_owned(),
                rx,
            )
            .await;
        })
    };
    let acks: Acks = Arc::default();
    let b1 = good(1, ZERO_HASH);
    tx.send(delivery(topic("a1"), b1.payload.clone(), 1, &acks))
        .await
        .unwrap();
    tx.send(delivery(topic("a1"), b"garbage".to_vec(), 2, &acks))
        .await
        .unwrap();

    // Three failed attempts: nothing acknowledged, nothing stored.
    wait_for("three failed commits", || {
        store.calls.load(Ordering::SeqCst) >= 3
    })
    .await;
    assert!(acks.lock().unwrap().is_empty());
    assert!(store.stored.lock().unwrap().is_empty());
    assert!(
        metric(
            &metrics.encode(),
            "shopfloor_gateway_commit_failures_total "
        ) >= 3.0
    );

    // The store recovers: the same group commits, then everything is acknowledged in order.
    store.failing.store(false, Ordering::SeqCst);
    wait_for("acks", || acks.lock().unwrap().len() == 2).await;
    assert_eq!(*acks.lock().unwrap(), vec![1, 2]);
    assert_eq!(store.stored.lock().unwrap().len(), 1);
    let q = store.quarantined.lock().unwrap().clone();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "malformed");

    drop(tx);
    task.await.unwrap();
    let t = metrics.encode();
    assert_eq!(
        metric(&t, "shopfloor_gateway_batches_total{result=\"stored\"} "),
        1.0
    );
    assert_eq!(
        metric(
            &t,
            "shopfloor_gateway_batches_total{result=\"quarantined\"} "
        ),
        1.0
    );
    assert_eq!(
        metric(
            &t,
            "shopfloor_gateway_quarantined_total{reason=\"malformed\"} "
        ),
        1.0
    );
    // 6 samples + 4 readings + 2 states.
    assert_eq!(metric(&t, "shopfloor_gateway_readings_total "), 12.0);
    assert_eq!(metric(&t, "shopfloor_gateway_commit_seconds_count "), 1.0);
}

#[tokio::test]
async fn duplicates_are_acknowledged_and_replays_quarantined() {
    let store = MemStore::default();
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(64);
    let acks: Acks = Arc::default();
    let b1 = good(1, ZERO_HASH);
    let b2 = seal(
        1,
        contents(NOW - 10 * MIN),
        "a1",
        2,
        &b1.body_hash,
        NOW - 300,
    );
    // Another body under seq 1 (a second chain under the same key).
    let replay = seal(1, contents(NOW - 30 * MIN), "a1", 1, ZERO_HASH, NOW - 200);
    let payloads = [
        &b1.payload,
        &b2.payload,
        &b1.payload,
        &replay.payload,
        &b2.payload,
    ];
    for (i, p) in payloads.iter().enumerate() {
        tx.send(delivery(topic("a1"), (*p).clone(), i, &acks))
            .await
            .unwrap();
    }
    drop(tx);
    ingest::run_with(
        &store,
        Arc::new(trust()),
        metrics.clone(),
        cfg(),
        PREFIX.to_owned(),
        rx,
    )
    .await;

    assert_eq!(*acks.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    let stored = store.stored.lock().unwrap();
    assert_eq!(stored.len(), 2);
    // The stored seq 1 is the first body, not the replay.
    assert_eq!(stored[&("a1".to_owned(), 1)].payload, b1.payload);
    let q = store.quarantined.lock().unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].reason, "replayed_seq");
    assert_eq!((q[0].agent.as_deref(), q[0].seq), (Some("a1"), Some(1)));
    assert!(q[0].detail.contains("body.seq"), "{}", q[0].detail);
    assert!(q[0].detail.contains(&replay.body_hash));
    assert_eq!(q[0].payload, replay.payload);

    let t = metrics.encode();
    assert_eq!(
        metric(&t, "shopfloor_gateway_batches_total{result=\"stored\"} "),
        2.0
    );
    assert_eq!(
        metric(&t, "shopfloor_gateway_batches_total{result=\"duplicate\"} "),
        2.0
    );
    assert_eq!(
        metric(
            &t,
            "shopfloor_gateway_batches_total{result=\"quarantined\"} "
        ),
        1.0
    );
    assert_eq!(
        metric(
            &t,
            "shopfloor_gateway_quarantined_total{reason=\"replayed_seq\"} "
        ),
        1.0
    );
}

#[tokio::test]
async fn groups_respect_the_commit_size() {
    let store = MemStore::default();
    let (tx, rx) = mpsc::channel(64);
    let acks: Acks = Arc::default();
    let mut prev = ZERO_HASH.to_owned();
    for seq in 1..=7u64 {
        let b = seal(
            1,
            contents(NOW - 100 * MIN + seq as i64 * 10 * MIN),
            "a1",
            seq,
            &prev,
            NOW - 100,
        );
        prev = b.body_hash.clone();
        tx.send(delivery(topic("a1"), b.payload, seq as usize, &acks))
            .await
            .unwrap();
    }
    drop(tx);
    let mut c = cfg();
    c.max_batches_per_commit = 3;
    c.commit_wait_ms = 1000;
    ingest::run_with(
        &store,
        Arc::new(trust()),
        Arc::new(Metrics::new()),
        c,
        PREFIX.to_owned(),
        rx,
    )
    .await;
    // Everything was queued before the loop started: groups of 3, 3, 1.
    assert_eq!(*store.transactions.lock().unwrap(), vec![3, 3, 1]);
    assert_eq!(*acks.lock().unwrap(), (1..=7).collect::<Vec<_>>());
}

/// A store whose commits of agent `a1`'s seq 1 take a while, recording how many commits run
/// at once and the order in which batches were stored.
#[derive(Default)]
struct SlowStore {
    running: AtomicUsize,
    most: AtomicUsize,
    order: Mutex<Vec<(String, i64)>>,
}

impl IngestStore for SlowStore {
    async fn commit_batches(&self, batches: &[NewBatch]) -> shopfloor_store::Result<Vec<Outcome>> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        if batches.iter().any(|b| b.agent == "a1" && b.seq == 1) {
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.order
            .lock()
            .unwrap()
            .extend(batches.iter().map(|b| (b.agent.clone(), b.seq)));
        self.running.fetch_sub(1, Ordering::SeqCst);
        Ok(batches
            .iter()
            .map(|_| Outcome::Stored {
                chain: Chain::Linked,
            })
            .collect())
    }
    async fn commit_quarantine(&self, _: &[QuarantineRow]) -> shopfloor_store::Result<()> {
        Ok(())
    }
}

/// Two groups are committed at once when their agents differ; a group with an agent that is
/// still being committed waits, so each agent's batches are stored in order; the
/// acknowledgements keep the arrival order although a later group finished first.
#[tokio::test]
async fn groups_of_other_agents_commit_at_once_and_acks_keep_arrival_order() {
    for depth in [1, 2] {
        let store = SlowStore::default();
        let (tx, rx) = mpsc::channel(64);
        let acks: Acks = Arc::default();
        let a1_1 = good(1, ZERO_HASH);
        let a1_2 = seal(
            1,
            contents(NOW - 5 * MIN),
            "a1",
            2,
            &a1_1.body_hash,
            NOW - 100,
        );
        let a2_1 = seal(2, contents(NOW - 20 * MIN), "a2", 1, ZERO_HASH, NOW - 100);
        tx.send(delivery(topic("a1"), a1_1.payload, 1, &acks))
            .await
            .unwrap();
        tx.send(delivery(topic("a2"), a2_1.payload, 2, &acks))
            .await
            .unwrap();
        tx.send(delivery(topic("a1"), a1_2.payload, 3, &acks))
            .await
            .unwrap();
        drop(tx);
        let mut c = cfg();
        c.max_batches_per_commit = 1;
        c.commits_in_flight = Some(depth);
        ingest::run_with(
            &store,
            Arc::new(trust()),
            Arc::new(Metrics::new()),
            c,
            PREFIX.to_owned(),
            rx,
        )
        .await;
        assert_eq!(*acks.lock().unwrap(), vec![1, 2, 3], "depth {depth}");
        let order = store.order.lock().unwrap().clone();
        let k = |a: &str, s: i64| (a.to_owned(), s);
        if depth == 1 {
            assert_eq!(order, vec![k("a1", 1), k("a2", 1), k("a1", 2)]);
            assert_eq!(store.most.load(Ordering::SeqCst), 1);
        } else {
            // a2's group ran beside a1's slow one and finished first; a1's seq 2 waited.
            assert_eq!(order, vec![k("a2", 1), k("a1", 1), k("a1", 2)]);
            assert_eq!(store.most.load(Ordering::SeqCst), 2);
        }
    }
}

// --- against a real SQLite store ---

async fn sqlite(dir: &std::path::Path) -> shopfloor_gateway::db::Db {
    let url = format!("sqlite://{}", dir.join("gateway.db").display());
    shopfloor_gateway::db::Db::open(&url, None).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_are_quarantined_and_the_gateway_keeps_serving() {
    use shopfloor_store::Store as _;

    let dir = tempfile::tempdir().unwrap();
    let db = sqlite(dir.path()).await;
    let metrics = Arc::new(Metrics::new());
    let (tx, rx) = mpsc::channel(64);
    let task = tokio::spawn(ingest::run(
        db.clone(),
        Arc::new(trust()),
        metrics.clone(),
        cfg(),
        PREFIX.to_owned(),
        rx,
    ));
    let acks: Acks = Arc::default();

    // Every bad payload: acknowledged once its quarantine row is committed.
    let cases = bad_cases();
    for (i, c) in cases.iter().enumerate() {
        tx.send(delivery(c.topic.clone(), c.payload.clone(), i, &acks))
            .await
            .unwrap();
    }
    wait_for("the bad payloads acknowledged", || {
        acks.lock().unwrap().len() == cases.len()
    })
    .await;
    assert_eq!(*acks.lock().unwrap(), (0..cases.len()).collect::<Vec<_>>());

    let rows = db.list_quarantine(None, 1000).await.unwrap();
    assert_eq!(rows.len(), cases.len());
    for c in &cases {
        let found = rows.iter().any(|e| {
            e.row.topic == c.topic
                && e.row.reason == c.reason
                && e.row.detail.contains(c.field)
                && c.payload.starts_with(&e.row.payload)
        });
        assert!(
            found,
            "{}: not quarantined as {} naming {}",
            c.name, c.reason, c.field
        );
    }
    // Nothing of them is data.
    assert!(db.agent_heads().await.unwrap().is_empty());
    assert!(
        db.samples(CNC, "spindle_load", 0, i64::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(db.batches("a1", 1, 100, false).await.unwrap().is_empty());

    // Counted per reason.
    let t = metrics.encode();
    let mut expected: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases {
        *expected.entry(c.reason).or_default() += 1;
    }
    for (reason, n) in &expected {
        assert_eq!(
            metric(
                &t,
                &format!("shopfloor_gateway_quarantined_total{{reason=\"{reason}\"}} ")
            ),
            *n as f64,
            "{reason}"
        );
    }
    assert_eq!(
        metric(
            &t,
            "shopfloor_gateway_batches_total{result=\"quarantined\"} "
        ),
        cases.len() as f64
    );
    assert_eq!(
        metric(&t, "shopfloor_gateway_batches_total{result=\"stored\"} "),
        0.0
    );

    // The gateway keeps serving: a valid batch is stored, its redelivery is a duplicate.
    let b1 = good(1, ZERO_HASH);
    let n = cases.len();
    tx.send(delivery(topic("a1"), b1.payload.clone(), n, &acks))
        .await
        .unwrap();
    wait_for("the valid batch acknowledged", || {
        acks.lock().unwrap().len() == n + 1
    })
    .await;
    tx.send(delivery(topic("a1"), b1.payload.clone(), n + 1, &acks))
        .await
        .unwrap();
    // A replay of another body under seq 1.
    let replay = seal(1, contents(NOW - 30 * MIN), "a1", 1, ZERO_HASH, NOW - 200);
    tx.send(delivery(topic("a1"), replay.payload.clone(), n + 2, &acks))
        .await
        .unwrap();
    wait_for("everything acknowledged", || {
        acks.lock().unwrap().len() == n + 3
    })
    .await;

    let heads = db.agent_heads().await.unwrap();
    assert_eq!(heads.len(), 1);
    assert_eq!(
        (heads[0].agent.as_str(), heads[0].batches, heads[0].last_seq),
        ("a1", 1, 1)
    );
    assert_eq!(heads[0].last_hash, b1.body_hash);
    let stored = db.batches("a1", 1, 1, true).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].payload.as_deref(), Some(&b1.payload[..]));
    let samples = db
        .samples(CNC, "spindle_load", 0, i64::MAX, 100)
        .await
        .unwrap();
    assert_eq!(samples.len(), 3);

    let rows = db.list_quarantine(None, 1000).await.unwrap();
    assert_eq!(rows.len(), cases.len() + 1);
    let r = rows
        .iter()
        .find(|e| e.row.reason == "replayed_seq")
        .unwrap();
    assert_eq!((r.row.agent.as_deref(), r.row.seq), (Some("a1"), Some(1)));
    assert_eq!(r.row.payload, replay.payload);

    let t = metrics.encode();
    assert_eq!(
        metric(&t, "shopfloor_gateway_batches_total{result=\"stored\"} "),
        1.0
    );
    assert_eq!(
        metric(&t, "shopfloor_gateway_batches_total{result=\"duplicate\"} "),
        1.0
    );
    assert_eq!(
        metric(
            &t,
            "shopfloor_gateway_quarantined_total{reason=\"replayed_seq\"} "
        ),
        1.0
    );
    assert_eq!(metric(&t, "shopfloor_gateway_readings_total "), 12.0);
    assert!(
        metric(
            &t,
            "shopfloor_gateway_db_latency_seconds_count{op=\"ingest\"} "
        ) >= 1.0
    );
    assert!(
        metric(
            &t,
            "shopfloor_gateway_db_latency_seconds_count{op=\"quarantine\"} "
        ) >= 1.0
    );

    drop(tx);
    task.await.unwrap();
}
