//! The MQTT consumer: subscribes to the agents' batches and status messages (MQTT 3.1.1, the
//! agents' version) and hands every batch to the ingest loop ([`crate::ingest::run`]) as a
//! [`Delivery`] whose [`Ack`] sends the PUBACK.
//!
//! Invariants:
//! - persistent session (`clean_session = false`, client id `shopfloor-gateway-<gateway.id>`)
//!   and manual acknowledgements: a batch is acknowledged only through its delivery's `Ack`,
//!   which the ingest loop sends after the commit; what was not acknowledged when the
//!   connection or the process died is redelivered by the broker;
//! - an acknowledgement is sent only on the connection that received the message: each
//!   CONNACK starts a new epoch, and acks of an earlier epoch are dropped (the broker
//!   redelivers those messages, and the store's dedupe makes the copy a `duplicate`), so a
//!   stale packet id can never acknowledge another message of a new session;
//! - rumqttc's event loop runs on its own task and is never blocked: requests are submitted
//!   with `try_` calls (retried on the next tick when the request queue is full), and deliveries
//!   go into the bounded ingest channel with `try_send`; when it is full they wait here in
//!   order (their number is bounded by the broker's in-flight window, since nothing is
//!   acknowledged before its commit), so keep-alives keep flowing while the store is slow;
//! - subscriptions (QoS 1): `$share/<shared_group>/<prefix>/+/batch` (plain `<prefix>/+/batch`
//!   when the group is empty or the broker is the embedded one, see [`crate::broker`]) and
//!   `<prefix>/+/status`; renewed after every CONNACK, also when the broker kept the session
//!   (it may hold the subscriptions of an earlier configuration; subscribing again is
//!   idempotent, and what still arrives on an old prefix is quarantined as `bad_topic`);
//! - reconnects back off exponentially (200 ms doubling to 10 s; rumqttc itself would retry
//!   at once); the delay starts again from 200 ms only after a connection that lasted 10 s, so
//!   two replicas misconfigured with one `gateway.id` (the broker hands the session to the
//!   newer connection) do not fight in a tight loop, and the log says so;
//! - broker requirements: a persistent session keeps what arrives while the gateway is away,
//!   but only as much as the broker is configured to queue. Mosquitto's default
//!   `max_queued_messages 1000` drops batches beyond that (the agents already have their
//!   PUBACK and deleted them): set `max_queued_messages 0` (or a bound sized for the longest
//!   gateway outage) and `persistence true`;
//! - the incoming packet limit is the protocol's maximum, so an oversized batch is received and
//!   quarantined (`too_large`) instead of breaking the connection in a redelivery loop;
//! - the last status message (retained birth / will) per agent is kept in memory for the API
//!   ([`MqttHandle::agent_status`]), at most [`MAX_STATUS_AGENTS`] agents, each at most
//!   [`MAX_STATUS_BYTES`]; other status payloads are counted as invalid and ignored.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{GatewayConfig, MqttSection};
use crate::ingest::{Ack, Delivery};
use crate::metrics::Metrics;

/// Largest incoming packet: the MQTT remaining-length limit (the ingest check enforces the
/// configured payload limit).
const MAX_INCOMING: usize = 268_435_460;
/// Largest outgoing packet (subscriptions, acks, disconnect).
const MAX_OUTGOING: usize = 64 * 1024;
/// Agents whose status is kept.
pub const MAX_STATUS_AGENTS: usize = 10_000;
/// Largest status payload kept.
pub const MAX_STATUS_BYTES: usize = 4096;
/// Reconnect backoff; it starts again from the minimum only after a connection that lasted
/// [`STABLE`].
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const STABLE: Duration = Duration::from_secs(10);
/// rumqttc request queue (subscriptions, acks).
const REQUEST_CAPACITY: usize = 1024;

/// The MQTT client id of a gateway replica.
pub fn client_id(gateway_id: &str) -> String {
    format!("shopfloor-gateway-{gateway_id}")
}

/// The subscription filters: (batches, status).
pub fn filters(mqtt: &MqttSection) -> (String, String) {
    let prefix = &mqtt.topic_prefix;
    let batches = if mqtt.embedded || mqtt.shared_group.is_empty() {
        format!("{prefix}/+/batch")
    } else {
        format!("$share/{}/{prefix}/+/batch", mqtt.shared_group)
    };
    (batches, format!("{prefix}/+/status"))
}

/// Where an external broker is: `mqtt://host[:port]` (1883) or `mqtts://host[:port]` (8883).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

/// Parses `mqtt.url`; errors name the field and the reason.
pub fn parse_url(url: &str) -> Result<BrokerUrl, String> {
    let bad = |why: &str| format!("mqtt.url: {url:?}: {why}");
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(bad("must start with mqtt:// or mqtts://"));
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err(bad(
            "only host and port are allowed (credentials go in mqtt.username and mqtt.password_file)",
        ));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed '[' in an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected ':' and a port after the IPv6 address"))?,
            ),
        };
        (host, port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    let port = match port {
        None => {
            if tls {
                8883
            } else {
                1883
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
    };
    Ok(BrokerUrl {
        tls,
        host: host.to_owned(),
        port,
    })
}

fn read(field: &str, path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{field}: {}: {e}", path.display()))
}

fn tls_config(mqtt: &MqttSection) -> Result<rustls::ClientConfig, String> {
    let ca_path = mqtt.ca_file.as_ref().ok_or_else(|| {
        "mqtt.ca_file: required for mqtts:// (the CA certificate(s) that signed the broker's \
         certificate, PEM)"
            .to_owned()
    })?;
    let ca = read("mqtt.ca_file", ca_path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        let cert = cert.map_err(|e| format!("mqtt.ca_file: {}: {e}", ca_path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("mqtt.ca_file: {}: {e}", ca_path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "mqtt.ca_file: {}: no PEM certificate in the file",
            ca_path.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("mqtt: TLS: {e}"))?
        .with_root_certificates(roots);
    match (&mqtt.client_cert, &mqtt.client_key) {
        (Some(cert), Some(key)) => {
            let pem = read("mqtt.client_cert", cert)?;
            let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_slice()).collect();
            let certs = certs.map_err(|e| format!("mqtt.client_cert: {}: {e}", cert.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "mqtt.client_cert: {}: no PEM certificate in the file",
                    cert.display()
                ));
            }
            let kpem = read("mqtt.client_key", key)?;
            let key_der = rustls_pemfile::private_key(&mut kpem.as_slice())
                .map_err(|e| format!("mqtt.client_key: {}: {e}", key.display()))?
                .ok_or_else(|| {
                    format!(
                        "mqtt.client_key: {}: no PEM private key in the file",
                        key.display()
                    )
                })?;
            builder
                .with_client_auth_cert(certs, key_der)
                .map_err(|e| format!("mqtt.client_key: {e}"))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err("mqtt.client_key: client_cert and client_key go together".to_owned()),
    }
}

/// rumqttc options of this gateway: persistent session, manual acks, credentials, TLS. With
/// the embedded broker started in this process, the consumer connects to its internal
/// loopback port with the internal credentials, not through the guard.
pub fn options(cfg: &GatewayConfig) -> Result<MqttOptions, String> {
    let mqtt = &cfg.mqtt;
    let internal = if mqtt.embedded {
        crate::guard::internal(mqtt.listen)
    } else {
        None
    };
    let (host, port, tls) = if let Some(i) = &internal {
        (i.addr.ip().to_string(), i.addr.port(), false)
    } else if mqtt.embedded {
        let a = crate::broker::probe_addr(mqtt.listen);
        (a.ip().to_string(), a.port(), false)
    } else {
        let url = mqtt
            .url
            .as_deref()
            .ok_or_else(|| "mqtt.url: required when mqtt.embedded = false".to_owned())?;
        let u = parse_url(url)?;
        (u.host, u.port, u.tls)
    };
    let mut o = MqttOptions::new(client_id(&cfg.gateway.id), host, port);
    o.set_keep_alive(Duration::from_secs(mqtt.keep_alive_s))
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_INCOMING, MAX_OUTGOING);
    match (&mqtt.username, &mqtt.password_file) {
        (Some(user), pw) => {
            let password = match pw {
                Some(p) => {
                    let bytes = read("mqtt.password_file", p)?;
                    let text = String::from_utf8(bytes).map_err(|_| {
                        format!("mqtt.password_file: {}: not UTF-8 text", p.display())
                    })?;
                    text.trim_end_matches(['\r', '\n']).to_owned()
                }
                None => String::new(),
            };
            o.set_credentials(user.clone(), password);
        }
        (None, Some(_)) => {
            return Err("mqtt.username: required with mqtt.password_file".to_owned());
        }
        (None, None) => {}
    }
    if let Some(i) = internal {
        o.set_credentials(i.username, i.password);
    }
    if tls {
        let c = tls_config(mqtt)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(c),
        )));
    }
    Ok(o)
}

type StatusMap = Arc<Mutex<BTreeMap<String, serde_json::Value>>>;

/// The running consumer.
#[derive(Debug)]
pub struct MqttHandle {
    status: StatusMap,
    connected: watch::Receiver<bool>,
    control: JoinHandle<()>,
    poller: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl MqttHandle {
    /// The last status message of each agent (`<prefix>/<agent>/status`), by agent id.
    pub fn agent_status(&self) -> Vec<(String, serde_json::Value)> {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Whether the consumer is connected to the broker now.
    pub fn connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver that changes with the connection state (tests, health).
    pub fn connected_watch(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Waits until the consumer stopped (after `shutdown`, or when the ingest loop is gone).
    pub async fn join(self) {
        let _ = self.control.await;
    }

    /// Stops at once, without DISCONNECT (what a crash looks like to the broker). Nothing that
    /// was not acknowledged yet will be.
    pub fn abort(self) {
        self.control.abort();
        if let Some(p) = self
            .poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            p.abort();
        }
    }
}

enum LoopEvent {
    Mqtt(Event),
    Down(String),
}

/// An acknowledgement to send: (epoch, packet id, QoS).
type AckRequest = (u64, u16, QoS);

/// Starts the consumer: validates the options (files are read now, so errors name the field),
/// then connects in the background and keeps reconnecting until `shutdown` becomes `true`.
/// Returns at once; the broker may still be unreachable.
pub async fn start(
    cfg: &GatewayConfig,
    deliveries: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<MqttHandle, String> {
    let opts = options(cfg)?;
    let (batch_filter, status_filter) = filters(&cfg.mqtt);
    let prefix = cfg.mqtt.topic_prefix.clone();
    let (client, el) = AsyncClient::new(opts, REQUEST_CAPACITY);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (stop_poller, poller_stop) = watch::channel(false);
    let poller = spawn_poller(el, ev_tx, poller_stop);
    let poller = Arc::new(Mutex::new(Some(poller)));
    let status: StatusMap = Arc::new(Mutex::new(BTreeMap::new()));
    let (connected_tx, connected) = watch::channel(false);
    let control = Controller {
        client,
        prefix,
        filters: vec![
            SubscribeFilter::new(batch_filter, QoS::AtLeastOnce),
            SubscribeFilter::new(status_filter, QoS::AtLeastOnce),
        ],
        deliveries,
        metrics,
        status: status.clone(),
        connected_tx,
        poller: poller.clone(),
        stop_poller,
    };
    let control = tokio::spawn(control.run(ev_rx, shutdown));
    Ok(MqttHandle {
        status,
        connected,
        control,
        poller,
    })
}

/// Drives rumqttc's event loop: forwards events, backs off after errors (rumqttc reconnects on
/// the next poll). When the controller stops it, it keeps polling for up to 2 s so the
/// DISCONNECT (queued after the last acknowledgements) goes out.
fn spawn_poller(
    mut el: rumqttc::EventLoop,
    tx: mpsc::UnboundedSender<LoopEvent>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut delay = BACKOFF_MIN;
        let mut connected = false;
        let mut since = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                break;
            }
            let ev = tokio::select! {
                ev = el.poll() => ev,
                r = stop.changed() => {
                    if r.is_err() || *stop.borrow() { break; }
                    continue;
                }
            };
            match ev {
                Ok(e) => {
                    if matches!(e, Event::Incoming(Packet::ConnAck(_))) {
                        connected = true;
                        since = tokio::time::Instant::now();
                    }
                    if tx.send(LoopEvent::Mqtt(e)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let mut text = match &e {
                        ConnectionError::ConnectionRefused(code) => {
                            format!("the broker refused the connection: {code:?}")
                        }
                        other => other.to_string(),
                    };
                    if connected {
                        if since.elapsed() >= STABLE {
                            delay = BACKOFF_MIN;
                        } else {
                            // Lost right after connecting: keep backing off, so two clients
                            // with one id do not take the session from each other in a loop.
                            text.push_str(
                                " (lost soon after connecting: does another gateway use the \
                                 same gateway.id?)",
                            );
                        }
                    }
                    connected = false;
                    if tx.send(LoopEvent::Down(text)).is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        r = stop.changed() => {
                            if r.is_err() || *stop.borrow() { return; }
                        }
                    }
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        }
        if !connected {
            return;
        }
        // Flush what the controller queued (acknowledgements, then the DISCONNECT).
        let deadline = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ev = el.poll() => match ev {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => return,
                    Ok(e) => { let _ = tx.send(LoopEvent::Mqtt(e)); }
                },
                _ = &mut deadline => return,
            }
        }
    })
}

/// How long a clean stop waits for the ingest loop to acknowledge what it was handed.
const DRAIN: Duration = Duration::from_secs(10);

struct Controller {
    client: AsyncClient,
    prefix: String,
    filters: Vec<SubscribeFilter>,
    deliveries: mpsc::Sender<Delivery>,
    metrics: Arc<Metrics>,
    status: StatusMap,
    connected_tx: watch::Sender<bool>,
    poller: Arc<Mutex<Option<JoinHandle<()>>>>,
    stop_poller: watch::Sender<bool>,
}

/// The controller's connection and queue state.
struct State {
    epoch: u64,
    connected: bool,
    need_subscribe: bool,
    down_logged: bool,
    acks: VecDeque<AckRequest>,
    overflow: VecDeque<Delivery>,
    /// Deliveries handed to the ingest loop and acknowledgements received back from it.
    handed: u64,
    answered: u64,
    /// Stopping: no new deliveries, waiting for the ingest loop to answer.
    draining: bool,
}

impl Controller {
    async fn run(
        self,
        mut ev_rx: mpsc::UnboundedReceiver<LoopEvent>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<AckRequest>();
        let mut st = State {
            epoch: 0,
            connected: false,
            need_subscribe: false,
            down_logged: false,
            acks: VecDeque::new(),
            overflow: VecDeque::new(),
            handed: 0,
            answered: 0,
            draining: false,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let drain_deadline = tokio::time::sleep(Duration::from_secs(u32::MAX.into()));
        tokio::pin!(drain_deadline);

        loop {
            if !st.draining && *shutdown.borrow() {
                self.begin_drain(&mut st, drain_deadline.as_mut());
            }
            if st.draining && st.answered >= st.handed {
                break;
            }
            tokio::select! {
                r = shutdown.changed(), if !st.draining => {
                    if r.is_err() {
                        // Nobody can ask us to stop any more: behave as asked.
                        self.begin_drain(&mut st, drain_deadline.as_mut());
                    }
                }
                () = &mut drain_deadline, if st.draining => {
                    tracing::warn!(unanswered = st.handed - st.answered, "mqtt consumer: stopping with deliveries not yet committed (the broker redelivers them)");
                    break;
                }
                Some(a) = ack_rx.recv() => {
                    st.answered += 1;
                    st.acks.push_back(a);
                }
                permit = self.deliveries.reserve(), if !st.overflow.is_empty() && !st.draining => {
                    match permit {
                        Ok(p) => {
                            if let Some(d) = st.overflow.pop_front() {
                                p.send(d);
                                st.handed += 1;
                            }
                        }
                        Err(_) => {
                            tracing::error!("mqtt consumer: the ingest loop is gone; stopping");
                            break;
                        }
                    }
                }
                ev = ev_rx.recv() => {
                    let Some(ev) = ev else { break };
                    if !self.on_event(ev, &mut st, &ack_tx) {
                        tracing::error!("mqtt consumer: the ingest loop is gone; stopping");
                        break;
                    }
                }
                _ = tick.tick() => {}
            }
            self.flush(&mut st);
        }
        self.flush(&mut st);
        if st.connected {
            let _ = self.client.try_disconnect();
        }
        let _ = self.stop_poller.send(true);
        self.metrics.mqtt_connected(false);
        let _ = self.connected_tx.send(false);
        let poller = self
            .poller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(p) = poller {
            let _ = p.await;
        }
    }

    /// Stops taking deliveries; what waits in `overflow` was never handed over and is left to
    /// the broker's redelivery.
    fn begin_drain(&self, st: &mut State, deadline: std::pin::Pin<&mut tokio::time::Sleep>) {
        st.draining = true;
        st.overflow.clear();
        deadline.reset(tokio::time::Instant::now() + DRAIN);
        tracing::info!(
            unanswered = st.handed - st.answered,
            "mqtt consumer stopping: waiting for the ingest loop to acknowledge"
        );
    }

    /// Handles one event of the event loop; false when the ingest loop is gone.
    fn on_event(
        &self,
        ev: LoopEvent,
        st: &mut State,
        ack_tx: &mpsc::UnboundedSender<AckRequest>,
    ) -> bool {
        match ev {
            LoopEvent::Mqtt(Event::Incoming(Packet::ConnAck(ack))) => {
                st.epoch += 1;
                st.connected = true;
                st.down_logged = false;
                self.metrics.mqtt_connected(true);
                let _ = self.connected_tx.send(true);
                // Subscribe on every connect, also when the broker kept the session: a kept
                // session holds the subscriptions of the previous configuration, which may have
                // had another topic prefix or group. Subscribing again is idempotent.
                st.need_subscribe = true;
                tracing::info!(
                    session_present = ack.session_present,
                    "mqtt consumer connected"
                );
            }
            LoopEvent::Mqtt(Event::Incoming(Packet::SubAck(s))) => {
                for (f, code) in self.filters.iter().zip(&s.return_codes) {
                    if matches!(code, SubscribeReasonCode::Failure) {
                        tracing::error!(filter = %f.path, "mqtt consumer: the broker refused the subscription (ACL?); nothing arrives on it");
                    }
                }
            }
            LoopEvent::Mqtt(Event::Incoming(Packet::Publish(p))) => {
                if let Some(agent) = status_agent(&self.prefix, &p.topic) {
                    self.record_status(agent, &p.payload);
                    st.acks.push_back((st.epoch, p.pkid, p.qos));
                } else if !st.draining {
                    return self.deliver(p, st, ack_tx);
                }
                // While draining, a new batch is left unacknowledged: the broker redelivers it.
            }
            LoopEvent::Mqtt(_) => {}
            LoopEvent::Down(reason) => {
                if st.connected {
                    tracing::warn!(%reason, "mqtt consumer: connection lost; reconnecting");
                    self.metrics.mqtt_reconnect();
                } else if !st.down_logged {
                    tracing::warn!(%reason, "mqtt consumer: cannot connect; retrying with backoff");
                } else {
                    tracing::debug!(%reason, "mqtt consumer: cannot connect");
                }
                st.down_logged = true;
                st.connected = false;
                self.metrics.mqtt_connected(false);
                let _ = self.connected_tx.send(false);
            }
        }
        true
    }

    /// Submits the pending subscription and acknowledgements (`try_` only: a full request
    /// queue leaves them for the next tick). Acks of an earlier connection are dropped.
    fn flush(&self, st: &mut State) {
        if st.connected && st.need_subscribe && !st.draining {
            match self.client.try_subscribe_many(self.filters.clone()) {
                Ok(()) => {
                    st.need_subscribe = false;
                    for f in &self.filters {
                        tracing::info!(filter = %f.path, "mqtt consumer: subscribing (QoS 1)");
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "mqtt request queue full; subscribing on the next tick");
                }
            }
        }
        while let Some(&(e, pkid, qos)) = st.acks.front() {
            if !st.connected || e != st.epoch {
                // Received on an earlier connection: the broker redelivers it.
                st.acks.pop_front();
                continue;
            }
            let mut p = Publish::new("", qos, Vec::<u8>::new());
            p.pkid = pkid;
            match self.client.try_ack(&p) {
                Ok(()) => {
                    st.acks.pop_front();
                }
                Err(_) => break, // queue full: next tick
            }
        }
    }

    /// Hands a batch to the ingest loop (in order: behind what waits in `overflow`); false
    /// when the ingest loop is gone.
    fn deliver(
        &self,
        mut p: Publish,
        st: &mut State,
        ack_tx: &mpsc::UnboundedSender<AckRequest>,
    ) -> bool {
        let payload = std::mem::take(&mut p.payload).to_vec();
        let (pkid, qos, epoch) = (p.pkid, p.qos, st.epoch);
        let tx = ack_tx.clone();
        let ack = Ack::new(move || {
            let _ = tx.send((epoch, pkid, qos));
        });
        let d = Delivery {
            topic: p.topic,
            payload,
            received: shopfloor_clock::now_ms(),
            ack,
        };
        if !st.overflow.is_empty() {
            st.overflow.push_back(d);
            return true;
        }
        match self.deliveries.try_send(d) {
            Ok(()) => {
                st.handed += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(d)) => {
                st.overflow.push_back(d);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn record_status(&self, agent: &str, payload: &[u8]) {
        let mut map = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        if payload.is_empty() {
            // A cleared retained message.
            map.remove(agent);
            return;
        }
        let value = if payload.len() > MAX_STATUS_BYTES {
            None
        } else {
            serde_json::from_slice::<serde_json::Value>(payload)
                .ok()
                .filter(serde_json::Value::is_object)
        };
        let Some(value) = value else {
            self.metrics.mqtt_status_invalid();
            tracing::debug!(
                agent,
                bytes = payload.len(),
                "mqtt: status message is not a JSON object of at most 4 KiB; ignored"
            );
            return;
        };
        if map.len() >= MAX_STATUS_AGENTS && !map.contains_key(agent) {
            tracing::warn!(
                agent,
                "mqtt: status of more than {MAX_STATUS_AGENTS} agents; ignored"
            );
            return;
        }
        map.insert(agent.to_owned(), value);
    }
}

/// The agent segment of `<prefix>/<agent>/status`.
fn status_agent<'t>(prefix: &str, topic: &'t str) -> Option<&'t str> {
    let agent = topic
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_suffix("/status")?;
    (!agent.is_empty() && !agent.contains('/')).then_some(agent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = |s: &str| parse_url(s);
        assert_eq!(
            u("mqtt://broker.plant:1884").unwrap(),
            BrokerUrl {
                tls: false,
                host: "broker.plant".into(),
                port: 1884
            }
        );
        assert_eq!(u("mqtt://10.0.0.1").unwrap().port, 1883);
        assert_eq!(u("mqtts://b/").unwrap().port, 8883);
        assert!(u("mqtts://b").unwrap().tls);
        let v6 = u("mqtt://[::1]:2000").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 2000));
        assert_eq!(u("mqtts://[fe80::1]").unwrap().port, 8883);
        for bad in [
            "tcp://b:1",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://b:0",
            "mqtt://b:99999",
            "mqtt://b:x",
            "mqtt://u:p@b:1883",
            "mqtt://b:1883/path",
            "mqtt://[::1",
            "mqtt://[::1]x",
        ] {
            let e = u(bad).unwrap_err();
            assert!(e.starts_with("mqtt.url: "), "{bad}: {e}");
        }
    }

    #[test]
    fn status_topics() {
        assert_eq!(
            status_agent("shopfloor/v1", "shopfloor/v1/a1/status"),
            Some("a1")
        );
        assert_eq!(status_agent("shopfloor/v1", "shopfloor/v1/a1/batch"), None);
        assert_eq!(status_agent("shopfloor/v1", "shopfloor/v1//status"), None);
        assert_eq!(
            status_agent("shopfloor/v1", "shopfloor/v1/a/b/status"),
            None
        );
        assert_eq!(status_agent("shopfloor/v1", "other/v1/a1/status"), None);
    }

    #[test]
    fn filter_names() {
        let mut m = MqttSection {
            embedded: false,
            ..MqttSection::default()
        };
        // The default: a plain subscription (Mosquitto keeps it across its restarts).
        assert_eq!(
            filters(&m),
            (
                "shopfloor/v1/+/batch".to_owned(),
                "shopfloor/v1/+/status".to_owned()
            )
        );
        m.shared_group = "shopfloor".into();
        assert_eq!(filters(&m).0, "$share/shopfloor/shopfloor/v1/+/batch");
        m.shared_group = "g".into();
        m.embedded = true;
        assert_eq!(filters(&m).0, "shopfloor/v1/+/batch");
        assert_eq!(client_id("gw-1"), "shopfloor-gateway-gw-1");
    }
}
