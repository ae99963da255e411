//! One OPC UA device: connect, resolve every point, subscribe, forward data changes, and
//! come back by itself after any loss.
//!
//! Recovery works in two layers:
//! - async-opcua's session event loop reconnects on its own (up to `session::LIBRARY_RETRIES`
//!   attempts) and moves or recreates the subscription with its monitored items, keyed by the
//!   old node ids (it does not start publishing for them: see the trigger after reconciling);
//! - after every (re)connect this module *reconciles*: it re-reads the namespace array,
//!   re-resolves every node id and browse path, and compares the session's subscription state
//!   with what the points need. Exactly one subscription is kept (extras are deleted), items on
//!   stale node ids are deleted, missing ones (never created, rejected, or moved to a new node
//!   id by a restarted server) are created. A watchdog rebuilds the subscription when the
//!   server stops sending notifications or keep-alives for it. When the library gives up, the
//!   whole client is torn down and rebuilt with [`Backoff`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore, Session, SessionPollResult};
use opcua::sync::Mutex;
use opcua::types::{
    DataChangeFilter, DataChangeNotification, DataChangeTrigger, DataValue, DeadbandType,
    ExtensionObject, MonitoredItemCreateRequest, NodeId, NotificationMessage, ObjectId,
    StatusChangeNotification, StatusCode, TimestampsToReturn,
};
use shopfloor_devices::point::{Deadband, NodeRef};
use shopfloor_devices::template::OpcuaDevice;
use tokio::sync::{mpsc, watch};

use super::address::{browse_path, parse_node_id, parse_path, path_error};
use super::config::{OpcuaConfig, OpcuaError};
use super::convert;
use super::session::{self, Connection, hint};
use crate::backoff::Backoff;
use crate::sample::{Event, LinkState, Outcome, Sample};

/// Browse paths per TranslateBrowsePathsToNodeIds request (servers limit this; 100 is the
/// async-opcua server default and common elsewhere).
const PATHS_PER_REQUEST: usize = 100;
/// Monitored items per CreateMonitoredItems request.
const ITEMS_PER_REQUEST: usize = 500;
/// Failed reconciles in a row before the session is thrown away.
const MAX_RECONCILE_FAILURES: u32 = 3;

/// A monitored item as the session knows it: client handle, server item id, node id.
type ItemState = (u32, u32, NodeId);

/// What the notification callback needs of a point.
#[derive(Debug)]
struct PointMeta {
    name: Arc<str>,
    scale: f64,
    offset: f64,
}

/// Runs one device until `shutdown` becomes true (or its sender is dropped), reporting
/// samples, link changes and service calls on `tx`. Returns early only when `tx` is closed.
pub async fn run_device(
    device: Arc<str>,
    cfg: OpcuaConfig,
    dev: OpcuaDevice,
    tx: mpsc::Sender<Event>,
    mut shutdown: watch::Receiver<bool>,
) {
    // Everything goes through one unbounded queue and one forwarder, so the notification
    // callback (synchronous, under the library's lock) never blocks and the order of events is
    // the order they happened in.
    let (out, mut out_rx) = mpsc::unbounded_channel::<Event>();
    let forwarder = tokio::spawn(async move {
        while let Some(ev) = out_rx.recv().await {
            if tx.send(ev).await.is_err() {
                break;
            }
        }
    });
    let mut dev_loop = DeviceLoop {
        points: dev
            .points
            .iter()
            .map(|p| PointMeta {
                name: Arc::from(p.name.as_str()),
                scale: p.scale,
                offset: p.offset,
            })
            .collect(),
        device,
        cfg,
        dev,
        out,
        link: None,
    };
    dev_loop.run(&mut shutdown).await;
    drop(dev_loop);
    let _ = forwarder.await;
}

enum SessionEnd {
    Shutdown,
    /// The session is gone or unusable; rebuild everything.
    Lost(String),
}

struct DeviceLoop {
    device: Arc<str>,
    cfg: OpcuaConfig,
    dev: OpcuaDevice,
    points: Arc<[PointMeta]>,
    out: mpsc::UnboundedSender<Event>,
    /// Last link state reported; `None` before the first attempt.
    link: Option<LinkState>,
}

fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

impl DeviceLoop {
    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let mut backoff = Backoff::new(self.cfg.backoff_initial, self.cfg.backoff_max);
        while !stopping(shutdown) && !self.out.is_closed() {
            let attempt = tokio::select! {
                r = session::connect(&self.cfg, &self.device) => r,
                _ = shutdown.changed() => continue,
            };
            match attempt {
                Ok(conn) => {
                    backoff.reset();
                    self.set_link(LinkState::Up, format!("connected to {}", conn.description));
                    match self.run_session(conn, shutdown).await {
                        SessionEnd::Shutdown => break,
                        SessionEnd::Lost(why) => self.set_link(LinkState::Down, why),
                    }
                }
                Err(e @ OpcuaError::Config(_)) => {
                    // Retrying cannot fix a configuration; report once and wait for shutdown.
                    self.set_link(LinkState::Down, e.to_string());
                    while !stopping(shutdown) {
                        if shutdown.changed().await.is_err() {
                            break;
                        }
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(device = %self.device, error = %e, "opc ua connect failed");
                    self.set_link(LinkState::Down, e.to_string());
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
        }
        if self.link == Some(LinkState::Up) {
            self.set_link(LinkState::Down, "shutdown".into());
        }
    }

    fn emit(&self, ev: Event) {
        let _ = self.out.send(ev);
    }

    fn set_link(&mut self, state: LinkState, detail: String) {
        if self.link != Some(state) {
            self.link = Some(state);
            self.emit(Event::Link {
                device: self.device.clone(),
                state,
                detail,
            });
        }
    }

    fn error_sample(&self, i: usize, reason: String) {
        self.emit(Event::Sample(Sample {
            device: self.device.clone(),
            point: self.points[i].name.clone(),
            source_time: None,
            received: shopfloor_clock::now(),
            value: Err(reason),
        }));
    }

    /// Times one service call and reports it as an [`Event::Request`].
    async fn call<T, F>(&self, service: &'static str, fut: F) -> Result<T, OpcuaError>
    where
        F: Future<Output = Result<T, opcua::types::Error>>,
    {
        let t0 = Instant::now();
        let r = fut.await;
        let outcome = match &r {
            Ok(_) => Outcome::Ok,
            Err(e) => outcome_of(e.status()),
        };
        self.emit(Event::Request {
            device: self.device.clone(),
            rtt: t0.elapsed(),
            outcome,
        });
        r.map_err(|e| OpcuaError::Service {
            service,
            status: e.status().to_string(),
        })
    }

    async fn run_session(
        &mut self,
        conn: Connection,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SessionEnd {
        let mut conn = conn;
        let watch = Watch::default();
        let mut connected = true;
        let mut need = Some(false); // Some(rebuild?) = a reconcile is due
        let mut failures = 0u32;
        let mut retry_at = tokio::time::Instant::now();
        let mut silent_after = Duration::MAX;
        // Last sign of life of the library's reconnect loop. Its TCP connect has no timeout, so
        // against a host that drops packets one attempt can hang for minutes; then the whole
        // client is rebuilt, whose connect is bounded by `connect_timeout`.
        let mut reconnecting_since: Option<Instant> = None;
        let stuck_after = self.cfg.connect_timeout + self.cfg.backoff_max;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let close_timeout = self.cfg.request_timeout.min(Duration::from_secs(3));
        loop {
            if let Some(rebuild) = need
                && connected
                && tokio::time::Instant::now() >= retry_at
            {
                let r = tokio::select! {
                    r = self.reconcile(&conn.session, &watch, rebuild) => r,
                    _ = shutdown.changed() => {
                        conn.close(close_timeout).await;
                        return SessionEnd::Shutdown;
                    }
                };
                match r {
                    Ok(expect) => {
                        need = None;
                        failures = 0;
                        silent_after = expect;
                        watch.heard_now();
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(device = %self.device, error = %e, failures, "opc ua subscribe failed");
                        if failures >= MAX_RECONCILE_FAILURES {
                            conn.close(close_timeout).await;
                            return SessionEnd::Lost(format!("cannot subscribe: {e}"));
                        }
                        retry_at = tokio::time::Instant::now()
                            + self.cfg.backoff_initial * (1 << failures);
                    }
                }
                continue;
            }
            tokio::select! {
                _ = shutdown.changed() => {
                    conn.close(close_timeout).await;
                    return SessionEnd::Shutdown;
                }
                ev = conn.events.recv() => match ev {
                    None => {
                        conn.abandon();
                        return SessionEnd::Lost("session event loop ended".into());
                    }
                    Some(Err(status)) => {
                        conn.abandon();
                        let hint = hint(status, &self.cfg);
                        return SessionEnd::Lost(format!("reconnecting gave up: {status}{hint}"));
                    }
                    Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                        connected = false;
                        reconnecting_since = Some(Instant::now());
                        self.set_link(LinkState::Down, format!("connection lost: {status}"));
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                        reconnecting_since = Some(Instant::now());
                        tracing::debug!(device = %self.device, %status, "opc ua reconnect failed");
                    }
                    Some(Ok(SessionPollResult::Reconnected(mode))) => {
                        connected = true;
                        reconnecting_since = None;
                        let detail = format!("reconnected to {} ({mode:?})", conn.description);
                        self.set_link(LinkState::Up, detail);
                        need = Some(need.unwrap_or(false));
                        retry_at = tokio::time::Instant::now();
                        watch.heard_now();
                    }
                    Some(Ok(_)) => {}
                },
                _ = tick.tick() => {
                    if self.out.is_closed() {
                        conn.close(close_timeout).await;
                        return SessionEnd::Shutdown;
                    }
                    if reconnecting_since.is_some_and(|t| t.elapsed() > stuck_after) {
                        conn.abandon();
                        return SessionEnd::Lost("reconnect attempt does not finish".into());
                    }
                    let dead = watch.dead.load(Ordering::Relaxed) || watch.silent_for() > silent_after;
                    if connected && need.is_none() && dead {
                        tracing::warn!(device = %self.device, "opc ua subscription silent or closed; recreating it");
                        need = Some(true);
                    }
                }
            }
        }
    }

    /// Makes the session's subscription match the points. Returns how long the subscription
    /// may stay silent before it is presumed dead.
    async fn reconcile(
        &self,
        session: &Arc<Session>,
        watch: &Watch,
        rebuild: bool,
    ) -> Result<Duration, OpcuaError> {
        let resolved = self.resolve(session).await?;
        watch.dead.store(false, Ordering::Relaxed);

        let existing: Vec<(u32, Vec<ItemState>)> = {
            let state = session.subscription_state().lock();
            state
                .subscription_ids()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|id| {
                    state.get(id).map(|s| {
                        let items = s
                            .monitored_items()
                            .map(|m| {
                                (
                                    m.client_handle(),
                                    m.id(),
                                    m.item_to_monitor().node_id.clone(),
                                )
                            })
                            .collect();
                        (id, items)
                    })
                })
                .collect()
        };
        let (sub_id, items) = match existing.as_slice() {
            [(id, items)] if !rebuild => (*id, items.clone()),
            other => {
                let stale: Vec<u32> = other.iter().map(|(id, _)| *id).collect();
                if !stale.is_empty() {
                    self.call("DeleteSubscriptions", session.delete_subscriptions(&stale))
                        .await?;
                }
                (self.create_subscription(session, watch).await?, Vec::new())
            }
        };

        let n = self.points.len();
        let mut keep = vec![false; n];
        let mut delete = Vec::new();
        for (handle, item_id, node) in &items {
            let i = (*handle as usize).wrapping_sub(1);
            match resolved.get(i) {
                Some(Ok(want)) if want == node && !keep[i] => keep[i] = true,
                _ => delete.push(*item_id),
            }
        }
        if !delete.is_empty() {
            self.call(
                "DeleteMonitoredItems",
                session.delete_monitored_items(sub_id, &delete),
            )
            .await?;
        }
        let mut create = Vec::new();
        for (i, r) in resolved.iter().enumerate() {
            match r {
                Ok(node) if !keep[i] => create.push((i, node.clone())),
                Ok(_) => {}
                Err(reason) => self.error_sample(i, reason.clone()),
            }
        }
        self.create_items(session, sub_id, &create).await?;
        // async-opcua 0.19 starts the publish loop of a new connection idle and only wakes it
        // on a trigger; subscriptions it transferred or recreated while reconnecting fired
        // their trigger before that loop existed, so nothing would be published (not even
        // keep-alives) until the next trigger. Trigger it now.
        session.trigger_publish_now();

        let state = session.subscription_state().lock();
        let expect = state.get(sub_id).map_or(Duration::from_secs(60), |s| {
            s.publishing_interval().max(Duration::from_millis(50))
                * s.max_keep_alive_count().max(1)
                * 2
                + self.cfg.request_timeout
        });
        Ok(expect)
    }

    /// Node id of every point, or why there is none.
    async fn resolve(
        &self,
        session: &Arc<Session>,
    ) -> Result<Vec<Result<NodeId, String>>, OpcuaError> {
        let ns = self
            .call("Read(NamespaceArray)", session.read_namespace_array())
            .await?;
        // A bad root fails the browse-path points only; node-id points still work.
        let root: Result<NodeId, String> = match &self.cfg.root {
            None => Ok(ObjectId::ObjectsFolder.into()),
            Some(text) => parse_node_id(text, &ns).map_err(|e| format!("device root: {e}")),
        };
        let mut resolved: Vec<Result<NodeId, String>> = Vec::with_capacity(self.points.len());
        let mut paths = Vec::new();
        for (i, p) in self.dev.points.iter().enumerate() {
            resolved.push(match &p.node {
                NodeRef::Node(text) => parse_node_id(text, &ns),
                NodeRef::Path(path) => {
                    match root.clone().and_then(|root| {
                        parse_path(path, self.dev.namespace.as_deref())
                            .and_then(|s| browse_path(&root, &s, &ns))
                    }) {
                        Ok(bp) => {
                            paths.push((i, bp));
                            Err(String::new()) // filled in below
                        }
                        Err(e) => Err(e),
                    }
                }
            });
        }
        for chunk in paths.chunks(PATHS_PER_REQUEST) {
            let request: Vec<_> = chunk.iter().map(|(_, bp)| bp.clone()).collect();
            let results = self
                .call(
                    "TranslateBrowsePathsToNodeIds",
                    session.translate_browse_paths_to_node_ids(&request),
                )
                .await?;
            for (k, (i, _)) in chunk.iter().enumerate() {
                let text = match &self.dev.points[*i].node {
                    NodeRef::Path(p) | NodeRef::Node(p) => p.as_str(),
                };
                resolved[*i] = match results.get(k) {
                    None => Err(format!("browse path `{text}`: no result from the server")),
                    Some(r) if r.status_code.is_bad() => Err(format!(
                        "browse path `{text}`: {}",
                        path_error(r.status_code)
                    )),
                    Some(r) => r
                        .targets
                        .iter()
                        .flatten()
                        .find(|t| t.remaining_path_index == u32::MAX)
                        .and_then(|t| t.target_id.try_resolve(&ns).map(|n| n.into_owned()))
                        .ok_or_else(|| {
                            format!(
                                "browse path `{text}`: {}",
                                path_error(StatusCode::BadNoMatch)
                            )
                        }),
                };
            }
        }
        Ok(resolved)
    }

    async fn create_subscription(
        &self,
        session: &Arc<Session>,
        watch: &Watch,
    ) -> Result<u32, OpcuaError> {
        let interval = self.cfg.publishing_interval.max(Duration::from_millis(50));
        // Keep-alive about every keep_alive_interval; the server drops the subscription after
        // `lifetime` intervals without a publish request (a minute or so of network trouble).
        let keep_alive =
            u32::try_from(self.cfg.keep_alive_interval.as_millis() / interval.as_millis().max(1))
                .unwrap_or(u32::MAX)
                .clamp(1, 10_000);
        let lifetime = keep_alive.saturating_mul(6);
        let callbacks = Callbacks {
            device: self.device.clone(),
            points: self.points.clone(),
            out: self.out.clone(),
            heard: watch.heard.clone(),
            dead: watch.dead.clone(),
        };
        self.call(
            "CreateSubscription",
            session.create_subscription(interval, lifetime, keep_alive, 0, 0, true, callbacks),
        )
        .await
    }

    async fn create_items(
        &self,
        session: &Arc<Session>,
        sub_id: u32,
        create: &[(usize, NodeId)],
    ) -> Result<(), OpcuaError> {
        let mut unfiltered = Vec::new();
        for (i, node, status) in self.create_batch(session, sub_id, create, true).await? {
            let filter_refused = [
                StatusCode::BadFilterNotAllowed,
                StatusCode::BadMonitoredItemFilterUnsupported,
                StatusCode::BadMonitoredItemFilterInvalid,
                StatusCode::BadDeadbandFilterInvalid,
            ]
            .contains(&status);
            if filter_refused && self.dev.points[i].deadband != Deadband::None {
                // A deadband is an optimisation: without it the point still works, only
                // with more traffic (percent deadbands need an EURange many servers lack).
                tracing::warn!(device = %self.device, point = %self.points[i].name, %status, "deadband refused; subscribing without it");
                unfiltered.push((i, node));
            } else {
                self.error_sample(i, item_error(&node, status));
            }
        }
        for (i, node, status) in self
            .create_batch(session, sub_id, &unfiltered, false)
            .await?
        {
            self.error_sample(i, item_error(&node, status));
        }
        Ok(())
    }

    /// Creates monitored items in requests of at most `ITEMS_PER_REQUEST`; returns the items
    /// the server refused, with its status.
    async fn create_batch(
        &self,
        session: &Arc<Session>,
        sub_id: u32,
        items: &[(usize, NodeId)],
        with_filter: bool,
    ) -> Result<Vec<(usize, NodeId, StatusCode)>, OpcuaError> {
        let mut refused = Vec::new();
        for chunk in items.chunks(ITEMS_PER_REQUEST) {
            let requests = chunk
                .iter()
                .map(|(i, node)| self.item_request(*i, node, with_filter))
                .collect();
            let results = self
                .call(
                    "CreateMonitoredItems",
                    session.create_monitored_items(sub_id, TimestampsToReturn::Both, requests),
                )
                .await?;
            for (k, (i, node)) in chunk.iter().enumerate() {
                let status = results
                    .get(k)
                    .map_or(StatusCode::BadUnexpectedError, |r| r.result.status_code);
                if !status.is_good() {
                    refused.push((*i, node.clone(), status));
                }
            }
        }
        Ok(refused)
    }

    fn item_request(
        &self,
        i: usize,
        node: &NodeId,
        with_filter: bool,
    ) -> MonitoredItemCreateRequest {
        let p = &self.dev.points[i];
        let mut req: MonitoredItemCreateRequest = node.clone().into();
        // Handle = point index + 1 (0 would make the library pick one): notifications and the
        // reconcile map items back to points without any table, across recreations.
        req.requested_parameters.client_handle = u32::try_from(i + 1).unwrap_or(u32::MAX);
        req.requested_parameters.sampling_interval = p.sampling_ms;
        req.requested_parameters.queue_size = p.queue_size.max(1);
        req.requested_parameters.discard_oldest = true;
        let deadband = match p.deadband {
            _ if !with_filter => None,
            Deadband::None => None,
            Deadband::Absolute(v) => Some((DeadbandType::Absolute, v)),
            Deadband::Percent(v) => Some((DeadbandType::Percent, v)),
        };
        if let Some((kind, value)) = deadband {
            req.requested_parameters.filter = ExtensionObject::from_message(DataChangeFilter {
                trigger: DataChangeTrigger::StatusValue,
                deadband_type: kind as u32,
                deadband_value: value,
            });
        }
        req
    }
}

fn item_error(node: &NodeId, status: StatusCode) -> String {
    let why = if status == StatusCode::BadNodeIdUnknown {
        " (no such node on the server)"
    } else if status == StatusCode::BadAttributeIdInvalid {
        " (not a variable)"
    } else if status == StatusCode::BadUserAccessDenied || status == StatusCode::BadNotReadable {
        " (not readable for this user)"
    } else {
        ""
    };
    format!("cannot subscribe to {node}: {status}{why}")
}

fn outcome_of(status: StatusCode) -> Outcome {
    if status == StatusCode::BadTimeout || status == StatusCode::BadRequestTimeout {
        Outcome::Timeout
    } else if [
        StatusCode::BadConnectionClosed,
        StatusCode::BadNotConnected,
        StatusCode::BadServerNotConnected,
        StatusCode::BadSecureChannelClosed,
        StatusCode::BadCommunicationError,
        StatusCode::BadDisconnect,
        StatusCode::BadSessionClosed,
        StatusCode::BadSessionIdInvalid,
    ]
    .contains(&status)
    {
        Outcome::LinkError
    } else {
        Outcome::Exception
    }
}

/// Liveness of the subscription as seen from its notifications.
#[derive(Debug, Clone)]
struct Watch {
    heard: Arc<Mutex<Instant>>,
    dead: Arc<AtomicBool>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            heard: Arc::new(Mutex::new(Instant::now())),
            dead: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Watch {
    fn heard_now(&self) {
        *self.heard.lock() = Instant::now();
    }
    fn silent_for(&self) -> Duration {
        self.heard.lock().elapsed()
    }
}

/// Called by the library for every publish response of the subscription, keep-alives
/// included; it keeps the subscription across recreations.
struct Callbacks {
    device: Arc<str>,
    points: Arc<[PointMeta]>,
    out: mpsc::UnboundedSender<Event>,
    heard: Arc<Mutex<Instant>>,
    dead: Arc<AtomicBool>,
}

impl Callbacks {
    fn on_value(&self, handle: u32, dv: &DataValue) {
        let Some(p) = (handle as usize)
            .checked_sub(1)
            .and_then(|i| self.points.get(i))
        else {
            tracing::debug!(device = %self.device, handle, "notification for an unknown client handle");
            return;
        };
        let _ = self.out.send(Event::Sample(Sample {
            device: self.device.clone(),
            point: p.name.clone(),
            source_time: dv.source_timestamp.as_ref().and_then(convert::timestamp),
            received: shopfloor_clock::now(),
            value: convert::data_value(dv, p.scale, p.offset),
        }));
    }
}

impl OnSubscriptionNotificationCore for Callbacks {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _items: MonitoredItemMap<'_>,
    ) {
        *self.heard.lock() = Instant::now();
        for obj in notification.notification_data.iter().flatten() {
            if let Some(dc) = obj.inner_as::<DataChangeNotification>() {
                for item in dc.monitored_items.iter().flatten() {
                    self.on_value(item.client_handle, &item.value);
                }
            } else if let Some(sc) = obj.inner_as::<StatusChangeNotification>() {
                // BadTimeout: the server deleted the subscription (lifetime expired).
                if sc.status.is_bad() {
                    tracing::warn!(device = %self.device, status = %sc.status, "opc ua subscription status change");
                    self.dead.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}
