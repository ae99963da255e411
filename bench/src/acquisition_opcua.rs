//! OPC UA acquisition throughput and agent CPU against the simulator (a separate
//! `shopfloor-sim` process, so that its CPU is not charged to the agent): 100 devices × 200
//! tags, 10 OPC UA servers with 10 devices each, one session per device, security None.
//! Every tag of every device ramps, so every tag changes on every simulator tick (100 ms).
//!
//! Three runs in the same process, same devices, same duration:
//! - baseline: polling with one Read request per tag (what naive collectors do);
//! - batched polling: one Read request for all 200 tags of a device per cycle;
//! - subscriptions: the agent's own client (`shopfloor_acquire::opcua::run_device`), one
//!   subscription per device with 200 monitored items, 100 ms sampling, values reported by
//!   exception (only changes travel).
//!
//! Polling runs read as fast as each session answers; the subscription run receives what the
//! simulator changes (up to 200,000 changes/s offered). The comparable figure is the agent CPU
//! per 1,000 values delivered; throughput is reported for each run as measured.
//!
//! Run: `shopfloor-bench acquisition-opcua` (SHOPFLOOR_BENCH_SECS changes the 5 s measuring
//! window). Linux only (reads /proc).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opcua::client::{ClientBuilder, IdentityToken, Session};
use opcua::types::{
    AttributeId, EndpointDescription, MessageSecurityMode, NodeId, ReadValueId, TimestampsToReturn,
    UserTokenPolicy, VariableId,
};
use shopfloor_acquire::Event;
use shopfloor_acquire::opcua::{OpcuaConfig, run_device};
use shopfloor_devices::{Overrides, Template};
use tokio::sync::{mpsc, watch};

use crate::Ctx;
use crate::util::{
    Figure, cores, cpu_seconds, rss_mib, runtime, start_sim, tempdir, window_secs, write,
};

const SCENARIO: &str = "acquisition-opcua";
const TAGS: usize = 200;

/// Servers × devices per server.
#[derive(Debug, Clone, Copy)]
struct Size {
    servers: usize,
    per_server: usize,
}

impl Size {
    fn devices(&self) -> usize {
        self.servers * self.per_server
    }
}

const FULL: Size = Size {
    servers: 10,
    per_server: 10,
};
const QUICK: Size = Size {
    servers: 2,
    per_server: 2,
};
const NAMESPACE: &str = "urn:shopfloor:bench";

fn template() -> String {
    let mut t = format!(
        "id = \"bench-ua-200\"\nname = \"bench\"\nname_zh = \"基准\"\nkind = \"test\"\nprotocol = \"opcua\"\n[opcua]\nnamespace = \"{NAMESPACE}\"\nsampling_ms = 100\nqueue_size = 10\n"
    );
    for i in 0..TAGS {
        t += &format!("[[point]]\nname = \"t{i:03}\"\npath = \"t{i:03}\"\n");
    }
    t
}

fn device_name(d: usize) -> String {
    format!("d{d:03}")
}

fn scenario(size: Size) -> String {
    let mut s =
        String::from("name = \"bench-ua\"\ntemplates = [\"bench-ua-200.toml\"]\ntick_ms = 100\n");
    for k in 0..size.servers {
        s += &format!("[[opcua]]\nname = \"u{k}\"\nlisten = \"127.0.0.1:0\"\n");
    }
    for d in 0..size.devices() {
        s += &format!(
            "[[device]]\nname = \"{}\"\ntemplate = \"bench-ua-200\"\nserver = \"u{}\"\n",
            device_name(d),
            d / size.per_server
        );
        for i in 0..TAGS {
            // Different slopes, so that no two tags carry the same series.
            s += &format!(
                "[[device.ramp]]\npoint = \"t{i:03}\"\nper_hour = {}\n",
                3600 + i
            );
        }
    }
    s
}

struct Figures {
    values_per_s: f64,
    requests_per_s: f64,
    cpu_ms_per_1000: f64,
    sim_cpu_ms_per_1000: f64,
    rss_mib: f64,
}

/// Measures `secs` of whatever the running tasks add to `values` and `requests`.
async fn measure(values: &AtomicU64, requests: &AtomicU64, secs: f64, sim_pid: &str) -> Figures {
    let (v0, r0) = (
        values.load(Ordering::Relaxed),
        requests.load(Ordering::Relaxed),
    );
    let (cpu0, sim0, t0) = (cpu_seconds("self"), cpu_seconds(sim_pid), Instant::now());
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (cpu1, sim1) = (cpu_seconds("self"), cpu_seconds(sim_pid));
    let v = values.load(Ordering::Relaxed) - v0;
    let r = requests.load(Ordering::Relaxed) - r0;
    let per_k = |cpu: f64| cpu * 1000.0 / (v.max(1) as f64) * 1000.0;
    Figures {
        values_per_s: v as f64 / elapsed,
        requests_per_s: r as f64 / elapsed,
        cpu_ms_per_1000: per_k(cpu1 - cpu0),
        sim_cpu_ms_per_1000: per_k(sim1 - sim0),
        rss_mib: rss_mib("self"),
    }
}

/// One polling session per device; `per_tag` sends one Read per tag, otherwise one Read
/// for all tags.
async fn polled(
    size: Size,
    endpoints: &[String],
    pki: &Path,
    per_tag: bool,
    secs: f64,
    sim_pid: &str,
) -> Figures {
    let mut client = ClientBuilder::new()
        .application_name("Shopfloor bench poller")
        .application_uri("urn:shopfloor:agent")
        .product_uri("urn:shopfloor:agent")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .expect("client");
    let mut sessions: Vec<(Arc<Session>, Vec<ReadValueId>)> = Vec::new();
    let mut loops = Vec::new();
    for d in 0..size.devices() {
        let url = &endpoints[d / size.per_server];
        let endpoint: EndpointDescription = (
            url.as_str(),
            "http://opcfoundation.org/UA/SecurityPolicy#None",
            MessageSecurityMode::None,
            UserTokenPolicy::anonymous(),
        )
            .into();
        let (session, event_loop) = client
            .connect_to_matching_endpoint(endpoint, IdentityToken::Anonymous)
            .await
            .expect("connect");
        loops.push(event_loop.spawn());
        assert!(session.wait_for_connection().await, "session {d} connects");
        // The simulator's node ids for path points: `<device>/<name>` in its own namespace;
        // look the namespace index up as a client would.
        let ns_array = session
            .read(
                &[ReadValueId {
                    node_id: VariableId::Server_NamespaceArray.into(),
                    attribute_id: AttributeId::Value as u32,
                    ..Default::default()
                }],
                TimestampsToReturn::Neither,
                0.0,
            )
            .await
            .expect("namespace array");
        let uris: Vec<String> = match ns_array.first().and_then(|v| v.value.clone()) {
            Some(opcua::types::Variant::Array(a)) => a
                .values
                .iter()
                .map(|v| match v {
                    opcua::types::Variant::String(s) => s.as_ref().to_string(),
                    _ => String::new(),
                })
                .collect(),
            other => panic!("namespace array: {other:?}"),
        };
        let ns = uris
            .iter()
            .position(|u| u == shopfloor_sim::opcua::SIM_NAMESPACE)
            .expect("simulator namespace") as u16;
        let nodes = (0..TAGS)
            .map(|i| ReadValueId {
                node_id: NodeId::new(ns, format!("{}/t{i:03}", device_name(d))),
                attribute_id: AttributeId::Value as u32,
                ..Default::default()
            })
            .collect();
        sessions.push((session, nodes));
    }
    let values = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (session, nodes) in &sessions {
        let (session, nodes) = (session.clone(), nodes.clone());
        let (values, requests, stop_rx) = (values.clone(), requests.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            while !*stop_rx.borrow() {
                let chunks: Vec<&[ReadValueId]> = if per_tag {
                    nodes.chunks(1).collect()
                } else {
                    vec![&nodes[..]]
                };
                for chunk in chunks {
                    let r = session
                        .read(chunk, TimestampsToReturn::Source, 0.0)
                        .await
                        .expect("read");
                    requests.fetch_add(1, Ordering::Relaxed);
                    let good = r
                        .iter()
                        .filter(|dv| dv.status.is_none_or(|s| s.is_good()) && dv.value.is_some())
                        .count();
                    values.fetch_add(good as u64, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let figures = measure(&values, &requests, secs, sim_pid).await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    for (session, _) in &sessions {
        let _ = session.disconnect().await;
    }
    for l in loops {
        let _ = l.await;
    }
    figures
}

/// The agent's own client: subscriptions with monitored items.
async fn subscribed(
    size: Size,
    endpoints: &[String],
    pki: &Path,
    t: &Template,
    secs: f64,
    sim_pid: &str,
) -> Figures {
    let device = t
        .resolve_opcua(&Overrides::default())
        .expect("template resolves");
    let (tx, mut rx) = mpsc::channel(65_536);
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for d in 0..size.devices() {
        let url = &endpoints[d / size.per_server];
        let mut cfg = OpcuaConfig::new(url.clone(), pki);
        cfg.trust_server_certs = true;
        // The sim's devices are objects below Objects: browse paths start at the device.
        cfg.root = Some(format!(
            "nsu={};s={}",
            shopfloor_sim::opcua::SIM_NAMESPACE,
            device_name(d)
        ));
        tasks.push(tokio::spawn(run_device(
            Arc::from(device_name(d)),
            cfg,
            device.clone(),
            tx.clone(),
            stop_rx.clone(),
        )));
    }
    drop(tx);
    let values = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let counter = {
        let (values, requests) = (values.clone(), requests.clone());
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                match e {
                    Event::Sample(s) if s.value.is_ok() => {
                        values.fetch_add(1, Ordering::Relaxed);
                    }
                    Event::Request { .. } => {
                        requests.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
        })
    };
    // Connect, subscribe, and let the first full data changes pass before measuring.
    let ready = Instant::now() + Duration::from_secs(60);
    while values.load(Ordering::Relaxed) < (size.devices() * TAGS) as u64 && Instant::now() < ready
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let figures = measure(&values, &requests, secs, sim_pid).await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = counter.await;
    figures
}

pub(crate) fn main(ctx: &Ctx) -> Result<Vec<Figure>, String> {
    let secs = window_secs(ctx.quick, 1.0, 5.0);
    let size = if ctx.quick { QUICK } else { FULL };
    let (servers, devices) = (size.servers, size.devices());
    let dir = tempdir("shopfloor-bench-ua")?;
    let dir = dir.path();
    write(&dir.join("bench-ua-200.toml"), &template())?;
    write(&dir.join("bench.toml"), &scenario(size))?;
    let t = Template::parse(&template()).map_err(|e| format!("bench template: {e}"))?;
    let pki_arg = dir.join("sim-pki").display().to_string();
    let sim = start_sim(&dir.join("bench.toml"), &["--pki-dir", &pki_arg], servers)?;
    let sim_pid = sim.pid().to_string();
    let endpoints = sim.addrs("opcua");
    let pki = dir.join("agent-pki");
    let rt = runtime(None)?;
    let (per_tag, batched, subs) = rt.block_on(async {
        let per_tag = polled(size, &endpoints, &pki, true, secs, &sim_pid).await;
        let batched = polled(size, &endpoints, &pki, false, secs, &sim_pid).await;
        let subs = subscribed(size, &endpoints, &pki, &t, secs, &sim_pid).await;
        (per_tag, batched, subs)
    });
    drop(sim);
    println!(
        "OPC UA, {devices} devices × {TAGS} tags on {servers} servers, security None, {secs} s per run, {} cores",
        cores()
    );
    println!(
        "{:<32} {:>12} {:>12} {:>12} {:>14} {:>14}",
        "", "Read per tag", "Read batched", "subscribed", "batched/base", "subscr./base"
    );
    let mut figures = Vec::new();
    let mut row = |name: &str, unit: &str, a: f64, b: f64, c: f64| {
        println!(
            "{name:<32} {a:>12.1} {b:>12.1} {c:>12.1} {:>13.2}× {:>13.2}×",
            b / a,
            c / a
        );
        let note = "baseline: one Read per tag";
        figures.push(
            Figure::new(SCENARIO, &format!("batched Read: {name}"), b, unit)
                .baseline(a)
                .note(note),
        );
        figures.push(
            Figure::new(SCENARIO, &format!("subscriptions: {name}"), c, unit)
                .baseline(a)
                .note(note),
        );
    };
    row(
        "values delivered per second",
        "values/s",
        per_tag.values_per_s,
        batched.values_per_s,
        subs.values_per_s,
    );
    row(
        "service requests per second",
        "requests/s",
        per_tag.requests_per_s,
        batched.requests_per_s,
        subs.requests_per_s,
    );
    row(
        "agent CPU ms per 1,000 values",
        "ms",
        per_tag.cpu_ms_per_1000,
        batched.cpu_ms_per_1000,
        subs.cpu_ms_per_1000,
    );
    row(
        "simulator CPU ms per 1,000 values",
        "ms",
        per_tag.sim_cpu_ms_per_1000,
        batched.sim_cpu_ms_per_1000,
        subs.sim_cpu_ms_per_1000,
    );
    row(
        "agent RSS MiB (end of run)",
        "MiB",
        per_tag.rss_mib,
        batched.rss_mib,
        subs.rss_mib,
    );
    Ok(figures)
}
