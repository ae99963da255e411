#![allow(clippy::unwrap_used, clippy::expect_used)]
//! OPC UA acquisition against the real in-process simulator server (async-opcua on both
//! sides, TCP on 127.0.0.1, own certificate stores per test).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use opcua::crypto::{CertificateStore, X509Data};

use shopfloor_acquire::opcua::{
    Identity, Mode, OpcuaConfig, OpcuaError, Policy, browse, run_device,
};
use shopfloor_acquire::{Event, LinkState, Sample};
use shopfloor_devices::template::{Overrides, PointDef, builtin};
use shopfloor_devices::{Deadband, Template, Value};
use shopfloor_sim::opcua::{OpcuaSim, OpcuaSimDevice, OpcuaSimOptions, start};
use shopfloor_sim::{Fault, Signals};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(8);

fn template(text: &str) -> Template {
    Template::parse(text).unwrap()
}

async fn serve(devices: Vec<OpcuaSimDevice>, opts: OpcuaSimOptions) -> OpcuaSim {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start(listener, devices, opts).await.unwrap()
}

/// Client settings for a test: fast retries, short publishing interval.
fn client(endpoint: String, pki: &TempDir) -> OpcuaConfig {
    let mut cfg = OpcuaConfig::new(endpoint, pki.path());
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(3);
    cfg.backoff_initial = Duration::from_millis(100);
    cfg.backoff_max = Duration::from_millis(500);
    cfg.publishing_interval = Duration::from_millis(100);
    cfg.keep_alive_interval = Duration::from_secs(1);
    cfg
}

struct Running {
    rx: mpsc::Receiver<Event>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    /// Everything received so far, in order.
    seen: Vec<Event>,
    /// Events of `seen` already matched by a wait (each event satisfies one wait only).
    used: Vec<bool>,
}

fn run(device: &str, cfg: OpcuaConfig, t: &Template, o: &Overrides) -> Running {
    let dev = t.resolve_opcua(o).unwrap();
    let (tx, rx) = mpsc::channel(1024);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(run_device(Arc::from(device), cfg, dev, tx, stop_rx));
    Running {
        rx,
        stop,
        task,
        seen: Vec::new(),
        used: Vec::new(),
    }
}

impl Running {
    /// The first unmatched event (received earlier or still to come) satisfying `f`.
    async fn until(&mut self, what: &str, mut f: impl FnMut(&Event) -> bool) -> Event {
        if let Some(k) = (0..self.seen.len()).find(|&k| !self.used[k] && f(&self.seen[k])) {
            self.used[k] = true;
            return self.seen[k].clone();
        }
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let Ok(ev) = tokio::time::timeout_at(deadline, self.rx.recv()).await else {
                panic!(
                    "timed out waiting for {what}; events so far: {:#?}",
                    self.seen
                );
            };
            let ev = ev.expect("run_device ended");
            let hit = f(&ev);
            self.seen.push(ev.clone());
            self.used.push(hit);
            if hit {
                return ev;
            }
        }
    }

    async fn sample(&mut self, point: &str, f: impl Fn(&Result<Value, String>) -> bool) -> Sample {
        match self
            .until(
                &format!("a sample of `{point}`"),
                |e| matches!(e, Event::Sample(s) if &*s.point == point && f(&s.value)),
            )
            .await
        {
            Event::Sample(s) => s,
            _ => unreachable!(),
        }
    }

    async fn value(&mut self, point: &str, v: Value) -> Sample {
        self.sample(point, |x| x.as_ref() == Ok(&v)).await
    }

    async fn link(&mut self, state: LinkState) -> String {
        match self
            .until(
                &format!("link {state:?}"),
                |e| matches!(e, Event::Link { state: s, .. } if *s == state),
            )
            .await
        {
            Event::Link { detail, .. } => detail,
            _ => unreachable!(),
        }
    }

    /// Collects whatever arrives within `d`.
    async fn settle(&mut self, d: Duration) {
        let deadline = tokio::time::Instant::now() + d;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.seen.push(ev);
            self.used.push(false);
        }
    }

    /// Samples of `point` with value `v` among the events since `mark`.
    fn count_since(&self, mark: usize, point: &str, v: &Value) -> usize {
        self.seen[mark..].iter().filter(|e| matches!(e, Event::Sample(s) if &*s.point == point && s.value.as_ref() == Ok(v))).count()
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run_device did not stop")
            .unwrap();
    }
}

const TYPES: &str = r#"
id = "types"
name = "types"
name_zh = "类型"
kind = "cnc"
protocol = "opcua"

[opcua]
namespace = "urn:test:types"
sampling_ms = 0

[[point]]
name = "flag"
path = "Data/Flag"

[[point]]
name = "signed"
path = "Data/Signed"

[[point]]
name = "unsigned"
node = "nsu=urn:test:types;s=Unsigned"

[[point]]
name = "real"
path = "Data/Real"

[[point]]
name = "text"
path = "<urn:test:other>#Info/Text"

[[point]]
name = "scaled"
path = "Data/Scaled"
scale = 0.1
offset = 1.0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_delivers_every_value_type_with_the_device_source_time() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let t = template(TYPES);
    let s = Arc::new(Signals::new());
    s.set("flag", Value::Bool(true));
    s.set("signed", Value::Int(-5));
    s.set("unsigned", Value::UInt(u64::from(u32::MAX) + 7));
    s.set("real", Value::Float(1.5));
    s.set("text", Value::Text("hello".into()));
    s.set("scaled", Value::Float(13.5));
    let mut opts = OpcuaSimOptions::new(spki.path());
    // The device clock is an hour behind: source times must be the device's, not ours.
    opts.clock_offset_ms = -3_600_000;
    let sim = serve(
        vec![OpcuaSimDevice {
            name: "m1".into(),
            template: t.clone(),
            signals: s.clone(),
        }],
        opts,
    )
    .await;
    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("m1");
    let mut r = run("m1", cfg, &t, &Overrides::default());

    r.link(LinkState::Up).await;
    let mut got = vec![
        r.value("flag", Value::Bool(true)).await,
        r.value("signed", Value::Int(-5)).await,
        r.value("unsigned", Value::UInt(u64::from(u32::MAX) + 7))
            .await,
        r.value("real", Value::Float(1.5)).await,
        r.value("text", Value::Text("hello".into())).await,
    ];
    let scaled = r
        .sample(
            "scaled",
            |v| matches!(v, Ok(Value::Float(x)) if (x - 13.5).abs() < 1e-9),
        )
        .await;
    got.push(scaled);

    s.set("signed", Value::Int(-6));
    s.set("text", Value::Text("world".into()));
    got.push(r.value("signed", Value::Int(-6)).await);
    got.push(r.value("text", Value::Text("world".into())).await);

    for sample in &got {
        let src = sample.source_time.expect("source timestamp");
        let behind = sample.received.duration_since(src).as_secs_f64();
        assert!(
            (3590.0..3610.0).contains(&behind),
            "{}: source {src} vs received {}",
            sample.point,
            sample.received
        );
        assert_eq!(&*sample.device, "m1");
    }
    assert!(
        r.seen.iter().any(|e| matches!(e, Event::Request { .. })),
        "service calls are reported"
    );
    r.stop().await;
    sim.stop().await;
}

const DEADBAND: &str = r#"
id = "deadband"
name = "deadband"
name_zh = "死区"
kind = "sensor"
protocol = "opcua"

[opcua]
namespace = "urn:test:db"
sampling_ms = 0

[[point]]
name = "temp"
path = "Temp"
deadband = { kind = "absolute", value = 1.0 }

[[point]]
name = "marker"
path = "Marker"

[[point]]
name = "level"
path = "Level"
deadband = { kind = "percent", value = 5.0 }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_deadband_suppresses_small_changes() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let t = template(DEADBAND);
    let s = Arc::new(Signals::new());
    s.set("temp", Value::Float(20.0));
    s.set("marker", Value::Int(0));
    s.set("level", Value::Float(10.0));
    let sim = serve(
        vec![OpcuaSimDevice {
            name: "d".into(),
            template: t.clone(),
            signals: s.clone(),
        }],
        OpcuaSimOptions::new(spki.path()),
    )
    .await;
    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("d");
    let mut r = run("d", cfg, &t, &Overrides::default());
    r.value("temp", Value::Float(20.0)).await;
    r.value("marker", Value::Int(0)).await;

    // Within 1.0 of the last reported 20.0: filtered by the server.
    s.set("temp", Value::Float(20.4));
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.set("temp", Value::Float(20.9));
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.set("marker", Value::Int(1));
    r.value("marker", Value::Int(1)).await;
    r.settle(Duration::from_millis(400)).await;
    let temps: Vec<_> = r
        .seen
        .iter()
        .filter_map(|e| match e {
            Event::Sample(s) if &*s.point == "temp" => Some(s.value.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        temps,
        vec![Ok(Value::Float(20.0))],
        "small changes must not be reported"
    );

    // 1.5 away from the last reported value: reported.
    s.set("temp", Value::Float(21.5));
    r.value("temp", Value::Float(21.5)).await;

    // A percent deadband needs an EURange the simulator (like many servers) does not have:
    // the server refuses the filter and the point is subscribed without it.
    r.value("level", Value::Float(10.0)).await;
    s.set("level", Value::Float(10.1));
    r.value("level", Value::Float(10.1)).await;
    r.stop().await;
    sim.stop().await;
}

const RESTART: &str = r#"
id = "restart"
name = "restart"
name_zh = "重启"
kind = "cnc"
protocol = "opcua"

[opcua]
namespace = "urn:test:restart"
sampling_ms = 0

[[point]]
name = "count"
path = "Production/Count"

[[point]]
name = "run"
node = "nsu=urn:test:restart;s=Run"

[[point]]
name = "program"
path = "Production/Program"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_point_comes_back_after_server_restarts_without_duplicates() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let t = template(RESTART);
    let s = Arc::new(Signals::new());
    s.set("count", Value::UInt(1));
    s.set("run", Value::Bool(false));
    s.set("program", Value::Text("O1000".into()));
    let devices = vec![OpcuaSimDevice {
        name: "mill".into(),
        template: t.clone(),
        signals: s.clone(),
    }];
    let opts = OpcuaSimOptions::new(spki.path());
    let mut sim = serve(devices.clone(), opts.clone()).await;
    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("mill");
    let mut r = run("mill", cfg, &t, &Overrides::default());
    r.link(LinkState::Up).await;
    r.value("count", Value::UInt(1)).await;
    r.value("run", Value::Bool(false)).await;
    r.value("program", Value::Text("O1000".into())).await;

    // Round 0: async-opcua recreates the subscription on the new server by itself.
    // Round 1: the new server moved the nodes; the reconcile re-resolves the browse paths.
    // Round 2: the outage outlasts the library's reconnect attempts; the client is rebuilt.
    for round in 0..3u64 {
        let addr = sim.local_addr();
        sim.stop().await;
        r.link(LinkState::Down).await;
        if round == 2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        // A new server process: same port, same devices, a fresh address space; the second
        // time with new node ids behind the same browse paths (as after a firmware update).
        let listener = TcpListener::bind(addr).await.unwrap();
        let mut opts = opts.clone();
        if round >= 1 {
            opts.path_id_prefix = "v2/".into();
        }
        sim = start(listener, devices.clone(), opts).await.unwrap();
        r.link(LinkState::Up).await;
        // The recreated items report their current values first...
        r.value("count", Value::UInt(1 + round)).await;
        r.value("run", Value::Bool(round % 2 == 1)).await;
        r.value(
            "program",
            Value::Text(if round == 0 {
                "O1000".into()
            } else {
                format!("O20{}", round - 1)
            }),
        )
        .await;
        // ...then every change arrives, without any action.
        let (count, run_flag, program) = (
            Value::UInt(2 + round),
            Value::Bool(round % 2 == 0),
            Value::Text(format!("O20{round}")),
        );
        let mark = r.seen.len();
        s.set("count", count.clone());
        s.set("run", run_flag.clone());
        s.set("program", program.clone());
        r.value("count", count.clone()).await;
        r.value("run", run_flag.clone()).await;
        r.value("program", program.clone()).await;
        r.settle(Duration::from_millis(500)).await;
        for (p, v) in [("count", &count), ("run", &run_flag), ("program", &program)] {
            assert_eq!(
                r.count_since(mark, p, v),
                1,
                "round {round}: exactly one sample of {p} = {v}; events: {:#?}",
                r.seen
            );
        }
    }
    let downs = r
        .seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Link {
                    state: LinkState::Down,
                    ..
                }
            )
        })
        .count();
    let ups = r
        .seen
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::Link {
                    state: LinkState::Up,
                    ..
                }
            )
        })
        .count();
    assert_eq!((downs, ups), (3, 4), "link events: {:#?}", r.seen);
    let errors: Vec<_> = r
        .seen
        .iter()
        .filter(|e| matches!(e, Event::Sample(s) if s.value.is_err()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    r.stop().await;
    sim.stop().await;
}

const PARTLY_BAD: &str = r#"
id = "partly-bad"
name = "partly bad"
name_zh = "部分错误"
kind = "cnc"
protocol = "opcua"

[opcua]
namespace = "urn:test:bad"
sampling_ms = 0

[[point]]
name = "good"
path = "Good"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_nodes_and_device_faults_are_error_values_and_other_points_keep_working() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let t = template(PARTLY_BAD);
    let s = Arc::new(Signals::new());
    s.set("good", Value::Int(1));
    let sim = serve(
        vec![OpcuaSimDevice {
            name: "p".into(),
            template: t.clone(),
            signals: s.clone(),
        }],
        OpcuaSimOptions::new(spki.path()),
    )
    .await;
    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("p");
    // The device config adds points the server does not have.
    let o = Overrides {
        points: vec![
            PointDef {
                name: "missing".into(),
                node: Some("nsu=urn:test:bad;s=DoesNotExist".into()),
                ..Default::default()
            },
            PointDef {
                name: "no_path".into(),
                path: Some("Nope/Nothing".into()),
                ..Default::default()
            },
            PointDef {
                name: "foreign".into(),
                node: Some("ns=99;s=Nothing".into()),
                ..Default::default()
            },
            PointDef {
                name: "no_namespace".into(),
                node: Some("nsu=urn:test:absent;i=1".into()),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut r = run("p", cfg, &t, &o);
    let missing = r.sample("missing", Result::is_err).await;
    assert!(
        missing
            .value
            .as_ref()
            .unwrap_err()
            .contains("BadNodeIdUnknown"),
        "{missing:?}"
    );
    let no_path = r.sample("no_path", Result::is_err).await;
    assert!(
        no_path.value.as_ref().unwrap_err().contains("Nope/Nothing"),
        "{no_path:?}"
    );
    let no_ns = r.sample("no_namespace", Result::is_err).await;
    assert!(
        no_ns
            .value
            .as_ref()
            .unwrap_err()
            .contains("urn:test:absent"),
        "{no_ns:?}"
    );
    let foreign = r.sample("foreign", Result::is_err).await;
    assert!(
        foreign
            .value
            .as_ref()
            .unwrap_err()
            .contains("BadNodeIdUnknown"),
        "{foreign:?}"
    );
    r.value("good", Value::Int(1)).await;
    s.set("good", Value::Int(2));
    r.value("good", Value::Int(2)).await;

    // A failing device: Bad status, then values of the wrong type, then healthy again.
    s.set_fault(Fault::Exceptions);
    let bad = r.sample("good", Result::is_err).await;
    assert!(
        bad.value.as_ref().unwrap_err().contains("BadDeviceFailure"),
        "{bad:?}"
    );
    s.set_fault(Fault::Garbage);
    let garbage = r
        .sample("good", |v| matches!(v, Err(e) if e.contains("ByteString")))
        .await;
    assert!(garbage.source_time.is_some());
    s.set_fault(Fault::None);
    r.value("good", Value::Int(2)).await;
    r.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_and_encrypt_with_user_name_and_a_clear_error_for_a_wrong_password() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let t = template(PARTLY_BAD);
    let s = Arc::new(Signals::new());
    s.set("good", Value::Int(42));
    let mut opts = OpcuaSimOptions::new(spki.path());
    opts.secure_endpoints = true;
    opts.anonymous = false;
    opts.users = vec![("operator".into(), "s3cret".into())];
    let sim = serve(
        vec![OpcuaSimDevice {
            name: "sec".into(),
            template: t.clone(),
            signals: s.clone(),
        }],
        opts,
    )
    .await;

    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("sec");
    cfg.security_policy = Policy::Basic256Sha256;
    cfg.security_mode = Mode::SignAndEncrypt;
    cfg.trust_server_certs = true;
    cfg.identity = Identity::UserName {
        user: "operator".into(),
        password: "s3cret".into(),
    };
    let mut r = run("sec", cfg.clone(), &t, &Overrides::default());
    let up = r.link(LinkState::Up).await;
    assert!(up.contains("SignAndEncrypt"), "{up}");
    r.value("good", Value::Int(42)).await;
    r.stop().await;

    // Wrong password: an error naming the cause, quickly, from both entry points.
    let mut wrong = cfg.clone();
    wrong.identity = Identity::UserName {
        user: "operator".into(),
        password: "guess".into(),
    };
    let err = tokio::time::timeout(WAIT, browse(&wrong, None, 1))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, OpcuaError::Connect { .. }), "{err}");
    assert!(err.to_string().contains("password"), "{err}");
    let mut r = run("sec", wrong, &t, &Overrides::default());
    let down = r.link(LinkState::Down).await;
    assert!(down.contains("password"), "{down}");
    r.stop().await;

    // Anonymous is not offered: the error lists what is.
    let mut anon = cfg.clone();
    anon.identity = Identity::Anonymous;
    let err = browse(&anon, None, 1).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, OpcuaError::NoMatchingEndpoint { .. })
            && text.contains("Basic256Sha256/SignAndEncrypt (user name)"),
        "{text}"
    );
    sim.stop().await;
}

/// A self-signed user certificate (`<name>.der`) and its private key (`<name>.pem`), made in
/// `dir` for the test: no key material is checked in.
fn user_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.der"));
    let key = dir.join(format!("{name}.pem"));
    let data = X509Data {
        key_size: 2048,
        common_name: name.into(),
        organization: "Shopfloor tests".into(),
        organizational_unit: "acquire".into(),
        country: "DE".into(),
        state: "Berlin".into(),
        alt_host_names: Vec::<String>::new().into(),
        certificate_duration_days: 1,
    };
    CertificateStore::create_certificate_and_key(&data, false, &cert, &key).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_certificate_login_delivers_samples_and_an_unknown_certificate_is_rejected() {
    let (spki, cpki, users) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    let t = template(PARTLY_BAD);
    let s = Arc::new(Signals::new());
    s.set("good", Value::Int(7));
    // RSA key generation takes a while: off the runtime's threads.
    let dir = users.path().to_path_buf();
    let (known, stranger) = tokio::task::spawn_blocking(move || {
        (user_cert(&dir, "operator"), user_cert(&dir, "stranger"))
    })
    .await
    .unwrap();
    let mut opts = OpcuaSimOptions::new(spki.path());
    opts.secure_endpoints = true;
    opts.anonymous = false;
    opts.user_certs = vec![known.0.clone()];
    let sim = serve(
        vec![OpcuaSimDevice {
            name: "cert".into(),
            template: t.clone(),
            signals: s.clone(),
        }],
        opts,
    )
    .await;

    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("cert");
    cfg.security_policy = Policy::Basic256Sha256;
    cfg.security_mode = Mode::Sign;
    cfg.trust_server_certs = true;
    cfg.identity = Identity::Certificate {
        cert: known.0.clone(),
        key: known.1.clone(),
    };
    let mut r = run("cert", cfg.clone(), &t, &Overrides::default());
    let up = r.link(LinkState::Up).await;
    assert!(up.contains("Basic256Sha256/Sign"), "{up}");
    r.value("good", Value::Int(7)).await;
    s.set("good", Value::Int(8));
    r.value("good", Value::Int(8)).await;
    r.stop().await;

    // A certificate the server does not know: an error naming the cause, from both entry points.
    let mut unknown = cfg.clone();
    unknown.identity = Identity::Certificate {
        cert: stranger.0.clone(),
        key: stranger.1.clone(),
    };
    let err = tokio::time::timeout(WAIT, browse(&unknown, None, 1))
        .await
        .expect("no hang")
        .unwrap_err();
    assert!(matches!(err, OpcuaError::Connect { .. }), "{err}");
    assert!(
        err.to_string().contains("user certificate rejected"),
        "{err}"
    );
    let mut r = run("cert", unknown, &t, &Overrides::default());
    let down = r.link(LinkState::Down).await;
    assert!(down.contains("user certificate rejected"), "{down}");
    r.stop().await;

    // The token is signed with the user's key, so the login needs no channel security.
    let mut plain = cfg.clone();
    plain.security_policy = Policy::None;
    plain.security_mode = Mode::None;
    let top = browse(&plain, None, 1).await.unwrap();
    assert!(
        top.iter().any(|e| e.browse_name.ends_with(":cert")),
        "{top:#?}"
    );

    // A key that is not the certificate's: refused before connecting, saying so (the server
    // would answer BadSecurityChecksFailed, which points at the application certificates).
    let mut mismatched = cfg.clone();
    mismatched.identity = Identity::Certificate {
        cert: known.0.clone(),
        key: stranger.1.clone(),
    };
    let err = browse(&mismatched, None, 1).await.unwrap_err();
    assert!(
        matches!(err, OpcuaError::Identity(_))
            && err
                .to_string()
                .contains("does not belong to the certificate"),
        "{err}"
    );
    let mut missing = cfg.clone();
    missing.identity = Identity::Certificate {
        cert: known.0.clone(),
        key: known.0.with_extension("missing"),
    };
    let err = browse(&missing, None, 1).await.unwrap_err();
    assert!(
        matches!(err, OpcuaError::Identity(_)) && err.to_string().contains("operator.missing"),
        "{err}"
    );
    sim.stop().await;

    // The simulator refuses to start with a certificate it cannot read, naming the file.
    let mut opts = OpcuaSimOptions::new(spki.path());
    opts.user_certs = vec![known.1.clone()];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = start(listener, Vec::new(), opts).await.unwrap_err();
    assert!(err.to_string().contains("operator.pem"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_lists_the_device_tree_with_node_ids_names_and_values() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let t = builtin("cnc-opcua-machinetool").unwrap().unwrap();
    let s = Arc::new(Signals::new());
    s.set("operation_mode", Value::Int(1));
    s.set("feed_override", Value::Float(95.0));
    let sim = serve(
        vec![OpcuaSimDevice {
            name: "cnc1".into(),
            template: t,
            signals: s,
        }],
        OpcuaSimOptions::new(spki.path()),
    )
    .await;
    let cfg = client(sim.endpoint(), &cpki);

    let top = browse(&cfg, None, 1).await.unwrap();
    assert_eq!(
        (
            top[0].depth,
            top[0].browse_name.as_str(),
            top[0].node_id.as_str()
        ),
        (0, "Objects", "i=85")
    );
    assert!(
        top.iter()
            .any(|e| e.depth == 1 && e.browse_name.ends_with(":cnc1") && e.node_class == "Object"),
        "{top:#?}"
    );

    let root = sim.root_node("cnc1").unwrap();
    let tree = browse(&cfg, Some(&root), 6).await.unwrap();
    assert_eq!(tree[0].node_id, root);
    let find = |name: &str| {
        tree.iter()
            .find(|e| e.browse_name.ends_with(&format!(":{name}")) || e.browse_name == name)
    };
    let monitoring = find("Monitoring").expect("Monitoring");
    assert_eq!(
        (monitoring.depth, monitoring.node_class.as_str()),
        (1, "Object")
    );
    let mode = find("OperationMode").expect("OperationMode");
    assert_eq!(
        (mode.depth, mode.node_class.as_str(), mode.value.as_deref()),
        (3, "Variable", Some("1"))
    );
    assert!(
        mode.node_id
            .starts_with("nsu=urn:shopfloor:sim;s=cnc1/Monitoring/MachineTool/OperationMode"),
        "{mode:?}"
    );
    assert_eq!(
        find("FeedOverride").and_then(|e| e.value.as_deref()),
        Some("95")
    );
    let number = tree.iter().filter(|e| e.browse_name == "Number").count();
    assert_eq!(
        number, 2,
        "CurrentState/Number of item state and operation mode"
    );
    // Depth-first listing: every entry's parent precedes it.
    for w in tree.windows(2) {
        assert!(w[1].depth <= w[0].depth + 1, "{tree:#?}");
    }
    let err = browse(&cfg, Some("nsu=urn:shopfloor:sim;s=nothing"), 1)
        .await
        .unwrap_err();
    assert!(matches!(err, OpcuaError::Node { .. }), "{err}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_templates_are_served_and_read_end_to_end() {
    let (spki, cpki) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let cnc = builtin("cnc-opcua-machinetool").unwrap().unwrap();
    let robot = builtin("robot-opcua-40010").unwrap().unwrap();
    let cnc_values = [
        ("machinery_item_state", Value::UInt(3)),
        ("machinery_operation_mode", Value::UInt(3)),
        ("operation_mode", Value::Int(1)),
        ("feed_override", Value::Float(100.0)),
        ("power_on_duration", Value::UInt(12_345)),
        ("parts_completed", Value::UInt(17)),
        ("parts_good", Value::UInt(16)),
        ("parts_produced_lifetime", Value::UInt(99_017)),
    ];
    let robot_values = [
        ("operational_mode", Value::Int(3)),
        ("emergency_stop", Value::Bool(false)),
        ("protective_stop", Value::Bool(false)),
        ("task_program_loaded", Value::Bool(true)),
        ("task_program_name", Value::Text("PICK_PLACE".into())),
        ("in_control", Value::Bool(true)),
        ("speed_override", Value::Float(80.0)),
        ("total_energy", Value::Float(1234.5)),
    ];
    let (sc, sr) = (Arc::new(Signals::new()), Arc::new(Signals::new()));
    for (p, v) in &cnc_values {
        sc.set(p, v.clone());
    }
    for (p, v) in &robot_values {
        sr.set(p, v.clone());
    }
    let sim = serve(
        vec![
            OpcuaSimDevice {
                name: "cnc1".into(),
                template: cnc.clone(),
                signals: sc.clone(),
            },
            OpcuaSimDevice {
                name: "robot1".into(),
                template: robot.clone(),
                signals: sr.clone(),
            },
        ],
        OpcuaSimOptions::new(spki.path()),
    )
    .await;
    let mut cfg = client(sim.endpoint(), &cpki);
    cfg.root = sim.root_node("cnc1");
    let mut rc = run("cnc1", cfg.clone(), &cnc, &Overrides::default());
    cfg.root = sim.root_node("robot1");
    let mut rr = run("robot1", cfg, &robot, &Overrides::default());
    for (p, v) in cnc_values {
        rc.value(p, v).await;
    }
    for (p, v) in robot_values {
        rr.value(p, v).await;
    }
    assert!(
        rc.seen
            .iter()
            .chain(rr.seen.iter())
            .all(|e| !matches!(e, Event::Sample(s) if s.value.is_err()))
    );
    // The state signals follow the machine.
    sc.set("machinery_item_state", Value::UInt(1));
    rc.value("machinery_item_state", Value::UInt(1)).await;
    sr.set("emergency_stop", Value::Bool(true));
    rr.value("emergency_stop", Value::Bool(true)).await;
    rc.stop().await;
    rr.stop().await;
    sim.stop().await;
}

#[test]
fn templates_resolve_with_the_documented_roles() {
    let cnc = builtin("cnc-opcua-machinetool").unwrap().unwrap();
    let d = cnc.resolve_opcua(&Overrides::default()).unwrap();
    assert_eq!(
        d.namespace.as_deref(),
        Some("http://opcfoundation.org/UA/MachineTool/")
    );
    let feed = d.points.iter().find(|p| p.name == "feed_override").unwrap();
    assert_eq!(feed.deadband, Deadband::Absolute(1.0));
    let states = cnc.states.as_ref().unwrap();
    assert_eq!(
        states.signals.get("item_state").map(String::as_str),
        Some("machinery_item_state")
    );
    let counters = cnc.counters.as_ref().unwrap();
    assert_eq!(counters.produced.as_deref(), Some("parts_completed"));
    assert_eq!(counters.good.as_deref(), Some("parts_good"));
    let robot = builtin("robot-opcua-40010").unwrap().unwrap();
    let r = robot.resolve_opcua(&Overrides::default()).unwrap();
    assert_eq!(
        r.namespace.as_deref(),
        Some("http://opcfoundation.org/UA/Robotics/")
    );
    let roles = &robot.states.as_ref().unwrap().signals;
    for role in [
        "operational_mode",
        "emergency_stop",
        "protective_stop",
        "task_running",
    ] {
        assert!(roles.contains_key(role), "{role}");
    }
    assert_eq!((cnc.kind.as_str(), robot.kind.as_str()), ("cnc", "robot"));
}
