//! The embedded MQTT broker (rumqttd 0.20, cargo feature `embedded-broker`, on by default): the
//! zero-setup broker of a single-box installation (`mqtt.embedded = true`). Clients reach it
//! only through the guard ([`crate::guard`]) on `mqtt.listen`: TLS, authentication, per-agent
//! ACL, MQTT 3.1.1 only. rumqttd itself listens on a free loopback port and accepts only one
//! internal user name with a random per-process password ([`crate::guard::Internal`]), which
//! the guard substitutes into every forwarded CONNECT and the gateway's consumer uses directly.
//!
//! Invariants and limits:
//! - only an MQTT 3.1.1 (v4) listener: rumqttd's v4 listener thread panics when a v5 client
//!   publishes with properties to a topic a v4 client subscribes to, and every later v4
//!   connection then fails (a finding from choosing the stack); agents speak 3.1.1;
//! - limits sized for a plant: 4,096 connections, 1,000 unacknowledged QoS 1 messages per
//!   connection, a maximum payload of twice `ingest.max_payload_bytes` (so an oversized batch
//!   reaches the gateway and is quarantined as `too_large` instead of disconnecting the agent
//!   in a loop; beyond twice the limit the broker refuses it);
//! - rumqttd keeps messages in memory only (no disk persistence): its commit log holds at most
//!   `SEGMENT_SIZE × SEGMENT_COUNT` bytes per subscription filter, so a gateway consumer that
//!   stays away longer than that takes to fill loses the oldest messages (agents already have
//!   their PUBACK). For long outages or several gateways, use an external broker;
//! - [`start_with_metrics`] binds `mqtt.listen` first (a taken port is an error naming the
//!   address), reads the guard's TLS and users files, and returns only once rumqttd accepted
//!   the internal credentials on its loopback port (which proves the port is ours), or an error
//!   naming the field and the reason. The broker and the guard run on their own named OS
//!   threads and have no shutdown API: they end with the process.
//!
//! Shared subscriptions: rumqttd's router parses `$share/<group>/<filter>` for v4 clients too
//! (`router/routing.rs`, `extract_group`), and a clean-session client gets its messages. But a
//! persistent-session client (`clean_session = false`, which the gateway needs) that leaves
//! with unacknowledged messages of a shared subscription kills the broker: on disconnect the
//! router removes the now empty group, then resets the group's cursor with
//! `.expect("group must exists")` and panics; the v4 listener thread follows with a poisoned
//! mutex, and every later connection is closed at once. Verified with rumqttd 0.20.0: one
//! manual-ack client subscribed to `$share/g/x/+/batch`, one unacknowledged message, the client
//! dropped; a new client afterwards got "connection closed by peer". With one gateway per
//! embedded broker there is nothing to share anyway, so [`crate::mqtt`] subscribes without
//! `$share` when `mqtt.embedded = true`, and the guard refuses `$share` filters to every
//! client.

use crate::config::GatewayConfig;

/// Per-filter commit log of rumqttd: segments of 64 MiB, 16 of them.
#[cfg(feature = "embedded-broker")]
const SEGMENT_SIZE: usize = 64 << 20;
#[cfg(feature = "embedded-broker")]
const SEGMENT_COUNT: usize = 16;
/// Largest MQTT payload (remaining length limit of the protocol).
#[cfg(feature = "embedded-broker")]
const MQTT_MAX_PAYLOAD: usize = 268_435_455;

/// The broker's payload limit: twice `ingest.max_payload_bytes`, at least 1 MiB.
#[cfg(feature = "embedded-broker")]
pub fn max_payload(cfg: &GatewayConfig) -> usize {
    cfg.ingest
        .max_payload_bytes
        .saturating_mul(2)
        .clamp(1 << 20, MQTT_MAX_PAYLOAD)
}

/// The rumqttd configuration for `cfg`: one v4 listener on `internal.addr` (loopback) that
/// accepts only `internal`'s credentials.
#[cfg(feature = "embedded-broker")]
pub fn broker_config(cfg: &GatewayConfig, internal: &crate::guard::Internal) -> rumqttd::Config {
    use std::collections::HashMap;

    let max_payload = max_payload(cfg);
    let v4 = rumqttd::ServerSettings {
        name: "v4-1".to_owned(),
        listen: internal.addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: max_payload,
            max_inflight_count: 1000,
            auth: Some(HashMap::from([(
                internal.username.clone(),
                internal.password.clone(),
            )])),
            external_auth: None,
            dynamic_filters: true,
        },
    };
    rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 4096,
            max_outgoing_packet_count: 1000,
            max_segment_size: SEGMENT_SIZE.max(max_payload),
            max_segment_count: SEGMENT_COUNT,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: rumqttd::Strategy::RoundRobin,
        },
        v4: Some(HashMap::from([("1".to_owned(), v4)])),
        ..rumqttd::Config::default()
    }
}

/// [`start_with_metrics`] with metrics nobody reads (tests).
pub fn start(cfg: &GatewayConfig) -> Result<(), String> {
    start_with_metrics(cfg, std::sync::Arc::new(crate::metrics::Metrics::new())).map(|_| ())
}

/// Starts the embedded broker and its guard on `mqtt.listen` and waits until the broker
/// accepts the internal credentials (at most 10 s). Errors name the field, the address and the
/// reason. The broker's and the guard's threads run until the process exits. Returns the
/// internal endpoint (also registered for [`crate::guard::internal`], where the consumer
/// finds it).
#[cfg(feature = "embedded-broker")]
pub fn start_with_metrics(
    cfg: &GatewayConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<crate::guard::Internal, String> {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let addr = cfg.mqtt.listen;
    // The guard's port first: a taken port is the operator's error, reported with the address.
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        format!(
            "mqtt.listen: the embedded broker cannot listen on {addr}: {e} (another broker \
             running? set mqtt.listen, or mqtt.embedded = false and mqtt.url)"
        )
    })?;
    let policy = crate::guard::Policy::from_config(cfg, max_payload(cfg)).map_err(|errors| {
        errors
            .iter()
            .map(|(field, reason)| format!("{field}: {reason}"))
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    // rumqttd binds inside its own thread and only logs a failure: take a free loopback port,
    // and prove afterwards with the random password that the port is ours.
    let internal_addr = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("mqtt.listen: no free loopback port for the embedded broker: {e}"))?;
    let internal = crate::guard::Internal {
        addr: internal_addr,
        username: crate::guard::INTERNAL_USER.to_owned(),
        password: crate::guard::random_token().map_err(|e| format!("mqtt.listen: {e}"))?,
    };
    let config = broker_config(cfg, &internal);
    let (done_tx, done_rx) = mpsc::channel::<String>();
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            let outcome = match broker.start() {
                Ok(()) => "the broker stopped".to_owned(),
                Err(e) => e.to_string(),
            };
            tracing::error!(%addr, reason = %outcome, "embedded MQTT broker ended");
            let _ = done_tx.send(outcome);
        })
        .map_err(|e| format!("mqtt.listen: cannot start the embedded broker thread: {e}"))?;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(reason) = done_rx.try_recv() {
            return Err(format!(
                "mqtt.listen: the embedded broker ({internal_addr}) did not start: {reason}"
            ));
        }
        match crate::guard::probe(&internal, Duration::from_millis(500)) {
            Ok(()) => break,
            Err(e) if Instant::now() >= deadline => {
                return Err(format!(
                    "mqtt.listen: the embedded broker did not accept connections on \
                     {internal_addr} within 10 s: {e}"
                ));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    tracing::info!(internal = %internal_addr, "embedded MQTT broker (MQTT 3.1.1) running");
    crate::guard::spawn(listener, policy, internal.clone(), metrics)?;
    crate::guard::register_internal(addr, internal.clone());
    Ok(internal)
}

/// Without the `embedded-broker` feature: refuses `mqtt.embedded = true`.
#[cfg(not(feature = "embedded-broker"))]
pub fn start_with_metrics(
    cfg: &GatewayConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
) -> Result<crate::guard::Internal, String> {
    let _ = (cfg, metrics);
    Err(
        "mqtt.embedded: this build has no embedded broker (cargo feature embedded-broker); \
         set mqtt.embedded = false and mqtt.url to an external broker"
            .to_owned(),
    )
}

/// Where a client reaches a listener bound to `addr` (an unspecified address means loopback).
pub fn probe_addr(addr: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_is_probed_on_loopback() {
        let a: std::net::SocketAddr = "0.0.0.0:1883".parse().unwrap();
        assert_eq!(probe_addr(a).to_string(), "127.0.0.1:1883");
        let a: std::net::SocketAddr = "[::]:1883".parse().unwrap();
        assert_eq!(probe_addr(a).to_string(), "[::1]:1883");
        let a: std::net::SocketAddr = "10.0.0.5:1883".parse().unwrap();
        assert_eq!(probe_addr(a), a);
    }
}
