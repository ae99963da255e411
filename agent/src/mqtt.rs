//! The publisher: takes batches from the outbox in order, seals them on first publication,
//! publishes with QoS 1 and deletes them from the outbox on PUBACK.
//!
//! Invariants:
//! - a batch leaves the outbox only on its PUBACK; whatever was in flight at a disconnect is
//!   published again (by rumqttc from its session state when the broker kept the session, by
//!   us from the outbox when it did not), so delivery is at least once and the gateway
//!   dedupes by (agent, seq);
//! - batches are submitted in `seq` order, and after a reconnect without session the replay
//!   starts again at the oldest unacknowledged one, so the broker sees them in order;
//! - at most `inflight` publishes are outstanding and requests are submitted with
//!   `try_publish` into a channel larger than that, so nothing here ever waits on the broker:
//!   acquisition and the outbox keep going while it is away;
//! - persistent session (`clean_session = false`, fixed client id), retained birth message on
//!   every connect, retained last will `offline`; reconnects back off exponentially.
//!
//! Packet ids: rumqttc assigns the id when the event loop takes the request and reports it as
//! `Outgoing::Publish(pkid)`, in submission order; a retransmission keeps its id. So a
//! `Publish(pkid)` for an id we already map is a retransmission, any other takes the oldest
//! submitted item. At most `inflight` items are outstanding, so ids are never reused while
//! mapped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rumqttc::{
    AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::MqttSection;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use shopfloor_acquire::backoff::Backoff;

/// Largest batch payload we publish or accept (brokers default to 256 MB; rumqttc to 10 kB).
pub const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Why the MQTT client could not be set up (bad TLS files and the like).
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("mqtt.tls: {0}")]
    Tls(String),
}

/// `shopfloor/v1/<agent>/batch`.
pub fn batch_topic(prefix: &str, agent: &str) -> String {
    format!("{prefix}/{agent}/batch")
}

/// `shopfloor/v1/<agent>/status`.
pub fn status_topic(prefix: &str, agent: &str) -> String {
    format!("{prefix}/{agent}/status")
}

/// The retained status payload (birth and will).
pub fn status_payload(agent: &str, online: bool, at_ms: i64, public_key: &str) -> Vec<u8> {
    serde_json::json!({
        "agent": agent,
        "status": if online { "online" } else { "offline" },
        "at": at_ms,
        "version": env!("CARGO_PKG_VERSION"),
        "public_key": public_key,
    })
    .to_string()
    .into_bytes()
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, MqttSetupError> {
    std::fs::read(path).map_err(|e| MqttSetupError::Tls(format!("{}: {e}", path.display())))
}

fn tls_config(tls: &crate::config::TlsFiles) -> Result<rustls::ClientConfig, MqttSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let ca = read_file(&tls.ca)?;
    let mut n = 0;
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        let c = c.map_err(|e| MqttSetupError::Tls(format!("{}: {e}", tls.ca.display())))?;
        roots
            .add(c)
            .map_err(|e| MqttSetupError::Tls(format!("{}: {e}", tls.ca.display())))?;
        n += 1;
    }
    if n == 0 {
        return Err(MqttSetupError::Tls(format!(
            "{}: no PEM certificate in the file",
            tls.ca.display()
        )));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let pem = read_file(cert)?;
            let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
            let certs =
                certs.map_err(|e| MqttSetupError::Tls(format!("{}: {e}", cert.display())))?;
            let kpem = read_file(key)?;
            let key_der = rustls_pemfile::private_key(&mut kpem.as_slice())
                .map_err(|e| MqttSetupError::Tls(format!("{}: {e}", key.display())))?
                .ok_or_else(|| {
                    MqttSetupError::Tls(format!(
                        "{}: no PEM private key in the file",
                        key.display()
                    ))
                })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| MqttSetupError::Tls(format!("client certificate: {e}")))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// rumqttc options for this agent (persistent session, will, TLS, credentials).
pub fn options(
    cfg: &MqttSection,
    agent: &str,
    public_key: &str,
) -> Result<MqttOptions, MqttSetupError> {
    let mut o = MqttOptions::new(cfg.client_id.clone(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive)
        .set_clean_session(false)
        .set_inflight(cfg.inflight)
        .set_max_packet_size(MAX_PACKET, MAX_PACKET)
        .set_last_will(LastWill::new(
            status_topic(&cfg.topic_prefix, agent),
            status_payload(agent, false, 0, public_key),
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &cfg.username {
        o.set_credentials(user.clone(), cfg.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &cfg.tls {
        let c = tls_config(tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(c),
        )));
    }
    Ok(o)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Batch(u64),
    Status,
}

/// What the publisher has learned, shared with `/healthz` and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherState {
    pub connected: bool,
    /// Highest seq acknowledged by the broker in this run.
    pub last_acked: u64,
    /// Last connection error, for `/healthz`.
    pub last_error: Option<String>,
}

/// Everything the publisher task needs.
#[derive(Debug)]
pub struct Publisher {
    pub cfg: MqttSection,
    pub agent: String,
    pub key: SigningKey,
    pub public_key: String,
    pub outbox: Arc<Outbox>,
    pub metrics: Arc<Metrics>,
    /// Woken when the outbox has new contents.
    pub wake: Arc<Notify>,
    pub state: watch::Sender<PublisherState>,
}

enum LoopEvent {
    Mqtt(Event),
    Down(String),
}

/// Drives rumqttc's event loop on its own task: never blocked by outbox work, backs off
/// between failed connection attempts.
fn spawn_event_loop(
    mut el: rumqttc::EventLoop,
    tx: mpsc::UnboundedSender<LoopEvent>,
    min: Duration,
    max: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Backoff::new(min, max);
        loop {
            let ev = tokio::select! {
                ev = el.poll() => ev,
                _ = shutdown.changed() => {
                    // Keep flushing until the client disconnects (or give up after 2 s).
                    let deadline = tokio::time::sleep(Duration::from_secs(2));
                    tokio::pin!(deadline);
                    loop {
                        tokio::select! {
                            ev = el.poll() => match ev {
                                Ok(e) => { let _ = tx.send(LoopEvent::Mqtt(e)); }
                                Err(_) => return,
                            },
                            _ = &mut deadline => return,
                        }
                    }
                }
            };
            match ev {
                Ok(e) => {
                    if matches!(e, Event::Incoming(Packet::ConnAck(_))) {
                        backoff.reset();
                    }
                    if tx.send(LoopEvent::Mqtt(e)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let text = match &e {
                        ConnectionError::ConnectionRefused(code) => {
                            format!("broker refused the connection: {code:?}")
                        }
                        other => other.to_string(),
                    };
                    if tx.send(LoopEvent::Down(text)).is_err() {
                        return;
                    }
                    let wait = backoff.next_delay();
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    })
}

impl Publisher {
    /// Runs until `shutdown`; then publishes the retained `offline` status and disconnects.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), MqttSetupError> {
        let opts = options(&self.cfg, &self.agent, &self.public_key)?;
        let inflight = usize::from(self.cfg.inflight.max(1));
        let (client, el) = AsyncClient::new(opts, inflight + 16);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let loop_task = spawn_event_loop(
            el,
            tx,
            self.cfg.reconnect_min,
            self.cfg.reconnect_max,
            shutdown.clone(),
        );
        let batch_topic = batch_topic(&self.cfg.topic_prefix, &self.agent);
        let status_topic = status_topic(&self.cfg.topic_prefix, &self.agent);

        let mut connected = false;
        // Submitted, waiting for their packet id, in submission order.
        let mut fresh: VecDeque<(Item, Instant)> = VecDeque::new();
        let mut by_pkid: HashMap<u16, (Item, Instant)> = HashMap::new();
        // Highest seq submitted in this session.
        let mut submitted: u64 = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { break };
                    match ev {
                        LoopEvent::Mqtt(Event::Incoming(Packet::ConnAck(ack))) => {
                            connected = true;
                            self.metrics.mqtt_connected.set(1);
                            if !ack.session_present {
                                // rumqttc dropped what it had in flight: replay from the outbox.
                                fresh.clear();
                                by_pkid.clear();
                                submitted = 0;
                            }
                            self.state.send_modify(|s| { s.connected = true; s.last_error = None; });
                            tracing::info!(session_present = ack.session_present, "mqtt connected");
                            let birth = status_payload(&self.agent, true, shopfloor_clock::now_ms(), &self.public_key);
                            if client.try_publish(&status_topic, QoS::AtLeastOnce, true, birth).is_ok() {
                                fresh.push_back((Item::Status, Instant::now()));
                            }
                        }
                        LoopEvent::Mqtt(Event::Outgoing(Outgoing::Publish(pkid))) => {
                            if !by_pkid.contains_key(&pkid)
                                && let Some(item) = fresh.pop_front()
                            {
                                by_pkid.insert(pkid, item);
                            }
                        }
                        LoopEvent::Mqtt(Event::Incoming(Packet::PubAck(ack))) => {
                            if let Some((item, at)) = by_pkid.remove(&ack.pkid)
                                && let Item::Batch(seq) = item
                            {
                                self.metrics.publish_latency.observe(at.elapsed().as_secs_f64());
                                match self.outbox.ack(seq).await {
                                    Ok(()) => {
                                        self.metrics.batches_acked.inc();
                                        self.state.send_modify(|s| s.last_acked = s.last_acked.max(seq));
                                    }
                                    Err(e) => tracing::error!(seq, error = %e, "outbox: cannot delete an acknowledged batch (it will be sent again)"),
                                }
                            }
                        }
                        LoopEvent::Mqtt(_) => {}
                        LoopEvent::Down(reason) => {
                            if connected {
                                tracing::warn!(%reason, "mqtt connection lost");
                                self.metrics.mqtt_reconnects.inc();
                            } else {
                                tracing::debug!(%reason, "mqtt connect failed");
                            }
                            connected = false;
                            self.metrics.mqtt_connected.set(0);
                            self.state.send_modify(|s| { s.connected = false; s.last_error = Some(reason.clone()); });
                        }
                    }
                }
                _ = self.wake.notified() => {}
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            if connected {
                self.fill(
                    &client,
                    &batch_topic,
                    inflight,
                    &mut fresh,
                    &by_pkid,
                    &mut submitted,
                )
                .await;
            }
        }
        // Clean stop: retained offline status (the will covers crashes), then disconnect.
        if connected {
            let bye = status_payload(
                &self.agent,
                false,
                shopfloor_clock::now_ms(),
                &self.public_key,
            );
            let _ = client.try_publish(&status_topic, QoS::AtLeastOnce, true, bye);
            let _ = client.try_disconnect();
        }
        let _ = loop_task.await;
        Ok(())
    }

    /// Submits batches until `inflight` are outstanding: first the unacknowledged sealed ones
    /// after `submitted` (a replay), then newly sealed ones.
    async fn fill(
        &self,
        client: &AsyncClient,
        topic: &str,
        inflight: usize,
        fresh: &mut VecDeque<(Item, Instant)>,
        by_pkid: &HashMap<u16, (Item, Instant)>,
        submitted: &mut u64,
    ) {
        while fresh.len() + by_pkid.len() < inflight {
            let room = inflight - fresh.len() - by_pkid.len();
            let next = match self.outbox.unacked(*submitted, room).await {
                Ok(v) if !v.is_empty() => v,
                Ok(_) => {
                    let now = shopfloor_clock::now_ms();
                    match self.outbox.seal_next(&self.agent, &self.key, now).await {
                        Ok(Some(s)) => {
                            self.metrics.batches_sealed.inc();
                            vec![s]
                        }
                        Ok(None) => return,
                        Err(e) => {
                            tracing::error!(error = %e, "outbox: cannot seal the next batch");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "outbox: cannot read unacknowledged batches");
                    return;
                }
            };
            for s in next {
                let bytes = s.payload.len() as u64;
                match client.try_publish(topic, QoS::AtLeastOnce, false, s.payload) {
                    Ok(()) => {
                        fresh.push_back((Item::Batch(s.seq), Instant::now()));
                        *submitted = (*submitted).max(s.seq);
                        self.metrics.batches_published.inc();
                        self.metrics.published_bytes.inc_by(bytes);
                    }
                    Err(e) => {
                        // The request channel is full: try again on the next tick.
                        tracing::debug!(error = %e, "mqtt request queue full");
                        return;
                    }
                }
            }
        }
    }
}
