//! The MQTT 3.1.1 parser of the gateway's guard (`shopfloor_gateway::guard::wire`) and its ACL,
//! on the input as the byte stream a client sends, split into packets the way the guard's
//! session does: fixed header (bounded before the body is read), CONNECT body, PUBLISH topic
//! (two length bytes, then the topic, the payload streamed), SUBSCRIBE body, other packets
//! skipped. Never a panic. Properties: a remaining length re-encodes to itself; a CONNECT that
//! parses re-encodes with the broker's credentials and parses back the same apart from them; a
//! topic that parses has no wildcard; an agent may publish only `<prefix>/<id>/batch|status`
//! and leave a will only on `<prefix>/<id>/status`; agents never subscribe; readers subscribe
//! only under the prefix; nobody gets a `$share/` subscription; a SUBACK is a well-formed packet.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shopfloor_gateway::guard::wire::{self, FixedHeader};
use shopfloor_gateway::guard::{
    MAX_CONTROL, Role, check_identity, may_publish, may_subscribe, may_will,
};

const PREFIX: &str = "shopfloor/v1";

fn roles(client_id: &str) -> Vec<Role> {
    let mut r = vec![
        Role::Anonymous,
        Role::Agent("line1-agent".into()),
        Role::Reader("ops".into()),
    ];
    if check_identity(client_id).is_ok() {
        r.push(Role::Agent(client_id.into()));
        r.push(Role::Reader(client_id.into()));
    }
    r
}

fn check_publish(topic: &str, client_id: &str) {
    assert!(!topic.contains(['+', '#']) && !topic.is_empty());
    for role in roles(client_id) {
        let allowed = may_publish(PREFIX, &role, topic);
        match &role {
            Role::Agent(id) => assert!(
                !allowed
                    || topic == format!("{PREFIX}/{id}/batch")
                    || topic == format!("{PREFIX}/{id}/status"),
                "agent {id} may publish to {topic:?}"
            ),
            Role::Reader(id) => assert!(!allowed, "reader {id} may publish"),
            Role::Anonymous => {}
        }
        let will = may_will(PREFIX, &role, topic);
        if let Role::Agent(id) = &role {
            assert!(
                !will || topic == format!("{PREFIX}/{id}/status"),
                "agent {id} may leave a will on {topic:?}"
            );
        }
    }
}

fn check_subscribe(filter: &str, client_id: &str) {
    for role in roles(client_id) {
        let allowed = may_subscribe(PREFIX, &role, filter);
        if filter.starts_with("$share/") {
            assert!(!allowed, "{role:?} may subscribe to {filter:?}");
        }
        match &role {
            Role::Agent(_) => assert!(!allowed, "{role:?} may subscribe"),
            Role::Reader(_) => assert!(
                !allowed || filter == PREFIX || filter.starts_with(&format!("{PREFIX}/")),
                "{role:?} may subscribe to {filter:?}"
            ),
            Role::Anonymous => {}
        }
    }
}

fn check_header(h: &FixedHeader, max: usize) {
    assert!((2..=5).contains(&h.len) && h.remaining <= max);
    assert!(h.kind != 0 && h.kind != 15);
    let enc = match wire::remaining_length(h.remaining) {
        Ok(e) => e,
        Err(e) => panic!(
            "a parsed remaining length {} does not encode: {e}",
            h.remaining
        ),
    };
    let mut packet = vec![(h.kind << 4) | h.flags];
    packet.extend_from_slice(&enc);
    match wire::fixed_header(&packet, max) {
        Ok(Some(again)) => {
            assert_eq!(
                (again.kind, again.flags, again.remaining),
                (h.kind, h.flags, h.remaining)
            );
            assert_eq!(again.len, packet.len());
        }
        other => panic!("{h:?} re-encoded as {packet:?} gives {other:?}"),
    }
}

fn connect(flags: u8, body: &[u8]) -> String {
    let Ok(c) = wire::parse_connect(flags, body) else {
        return String::new();
    };
    if let Some(w) = &c.will {
        for role in roles(c.client_id) {
            if let Role::Agent(id) = &role
                && may_will(PREFIX, &role, w.topic)
            {
                assert_eq!(w.topic, format!("{PREFIX}/{id}/status"));
            }
        }
    }
    let packet = match wire::encode_connect(&c, "shopfloor-guard", b"broker-secret") {
        Ok(p) => p,
        Err(e) => panic!("{c:?} parsed but does not re-encode: {e}"),
    };
    let Ok(Some(h)) = wire::fixed_header(&packet, usize::MAX) else {
        panic!("re-encoded CONNECT has no fixed header: {packet:?}");
    };
    assert_eq!(h.kind, wire::CONNECT);
    assert_eq!(h.len + h.remaining, packet.len());
    let again = match wire::parse_connect(h.flags, &packet[h.len..]) {
        Ok(a) => a,
        Err(e) => panic!("re-encoded {c:?} does not parse: {e}"),
    };
    assert_eq!(again.client_id, c.client_id);
    assert_eq!(again.clean_session, c.clean_session);
    assert_eq!(again.keep_alive, c.keep_alive);
    assert_eq!(again.will, c.will);
    assert_eq!(again.username, Some("shopfloor-guard"));
    assert_eq!(again.password, Some(&b"broker-secret"[..]));
    c.client_id.to_owned()
}

fuzz_target!(|data: &[u8]| {
    // A small limit now and then, so that the size check is exercised as well.
    let max = match data.first() {
        Some(b) if b & 0x0f == 0x0f => usize::from(*b),
        _ => MAX_CONTROL,
    };
    let mut client_id = String::new();
    let mut rest = data;
    while !rest.is_empty() {
        // The guard reads at most 5 header bytes, one at a time.
        let mut header = None;
        for n in 1..=rest.len().min(5) {
            match wire::fixed_header(&rest[..n], max) {
                Ok(None) => continue,
                Ok(Some(h)) => {
                    header = Some(h);
                    break;
                }
                Err(_) => return,
            }
        }
        let Some(h) = header else {
            return;
        };
        check_header(&h, max);
        let Some(body) = rest.get(h.len..h.len + h.remaining) else {
            // A truncated packet: what the guard has read of it.
            let partial = rest.get(h.len..).unwrap_or_default();
            let _ = wire::parse_connect(h.flags, partial);
            let _ = wire::parse_subscribe(h.flags, partial);
            let _ = wire::publish_topic(h.flags, partial);
            return;
        };
        match h.kind {
            wire::CONNECT => client_id = connect(h.flags, body),
            wire::PUBLISH => {
                // The guard reads two length bytes and the topic, then streams the payload.
                let [a, b, ..] = body else {
                    return;
                };
                let topic_len = usize::from(u16::from_be_bytes([*a, *b]));
                let Some(vh) = body.get(..2 + topic_len) else {
                    return;
                };
                match wire::publish_topic(h.flags, vh) {
                    Ok(topic) => check_publish(topic, &client_id),
                    Err(_) => return,
                }
            }
            wire::SUBSCRIBE => match wire::parse_subscribe(h.flags, body) {
                Ok(sub) => {
                    for (f, qos) in &sub.filters {
                        assert!(*qos <= 2 && !f.is_empty());
                        check_subscribe(f, &client_id);
                    }
                    let codes = vec![wire::SUBACK_FAILURE; sub.filters.len()];
                    let ack = match wire::suback(sub.pkid, &codes) {
                        Ok(a) => a,
                        Err(e) => panic!("no SUBACK for {sub:?}: {e}"),
                    };
                    match wire::fixed_header(&ack, usize::MAX) {
                        Ok(Some(h)) => {
                            assert_eq!(h.kind, wire::SUBACK);
                            assert_eq!(h.len + h.remaining, ack.len());
                        }
                        other => panic!("SUBACK {ack:?} gives {other:?}"),
                    }
                }
                Err(_) => return,
            },
            _ => {}
        }
        rest = &rest[h.len + h.remaining..];
    }
});
