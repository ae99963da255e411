//! The embedded MQTT broker (rumqttd 0.20, cargo feature `embedded-broker`, on by default): the
//! zero-setup broker of a single-box installation (`mqtt.embedded = true`), listening on
//! `mqtt.listen`. The gateway consumes from it over TCP like from any external broker.
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
//! - [`start`] returns only once the port accepts connections, or an error naming the address
//!   (port taken, bind refused, broker thread ended). The broker runs on its own named OS
//!   threads and has no shutdown API: it ends with the process.
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
//! `$share` when `mqtt.embedded = true`.

use crate::config::GatewayConfig;

/// Per-filter commit log of rumqttd: segments of 64 MiB, 16 of them.
#[cfg(feature = "embedded-broker")]
const SEGMENT_SIZE: usize = 64 << 20;
#[cfg(feature = "embedded-broker")]
const SEGMENT_COUNT: usize = 16;
/// Largest MQTT payload (remaining length limit of the protocol).
#[cfg(feature = "embedded-broker")]
const MQTT_MAX_PAYLOAD: usize = 268_435_455;

/// The rumqttd configuration for `cfg` (v4 listener on `mqtt.listen` only).
#[cfg(feature = "embedded-broker")]
pub fn broker_config(cfg: &GatewayConfig) -> rumqttd::Config {
    use std::collections::HashMap;

    let max_payload = cfg
        .ingest
        .max_payload_bytes
        .saturating_mul(2)
        .clamp(1 << 20, MQTT_MAX_PAYLOAD);
    let v4 = rumqttd::ServerSettings {
        name: "v4-1".to_owned(),
        listen: cfg.mqtt.listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: max_payload,
            max_inflight_count: 1000,
            auth: None,
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

/// Starts the embedded broker on `mqtt.listen` and waits until it accepts connections (at most
/// 10 s). Errors name the address and the reason. The broker threads run until the process
/// exits.
#[cfg(feature = "embedded-broker")]
pub fn start(cfg: &GatewayConfig) -> Result<(), String> {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let addr = cfg.mqtt.listen;
    // rumqttd binds inside its own thread and only logs a failure: find a taken port here, so
    // the error reaches the operator (and we never mistake another process for our broker).
    match std::net::TcpListener::bind(addr) {
        Ok(l) => drop(l),
        Err(e) => {
            return Err(format!(
                "mqtt.listen: the embedded broker cannot listen on {addr}: {e} (another broker \
                 running? set mqtt.listen, or mqtt.embedded = false and mqtt.url)"
            ));
        }
    }
    let config = broker_config(cfg);
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

    let probe = probe_addr(addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(reason) = done_rx.try_recv() {
            return Err(format!(
                "mqtt.listen: the embedded broker on {addr} did not start: {reason}"
            ));
        }
        if std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok() {
            tracing::info!(%addr, "embedded MQTT broker (MQTT 3.1.1) listening");
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "mqtt.listen: the embedded broker did not accept connections on {addr} within \
                 10 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Without the `embedded-broker` feature: refuses `mqtt.embedded = true`.
#[cfg(not(feature = "embedded-broker"))]
pub fn start(cfg: &GatewayConfig) -> Result<(), String> {
    let _ = cfg;
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
