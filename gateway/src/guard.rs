//! The guard of the embedded broker: an MQTT 3.1.1-aware TCP/TLS front for rumqttd
//! ([`crate::broker`]). rumqttd (built without TLS, and without topic ACLs) listens only on a
//! loopback port with one internal user name and a random per-process password; the guard
//! listens on `mqtt.listen`, terminates TLS (`[mqtt.tls]`), authenticates each client
//! (`[mqtt.auth]`), applies the per-agent ACL and forwards the connection to rumqttd with its
//! CONNECT rewritten to the internal credentials. The gateway's own consumer connects to the
//! internal port directly ([`internal`]).
//!
//! Identity of a connection:
//! - with `mqtt.tls.client_ca`: the subject CN of the verified client certificate (a user name,
//!   if sent, must equal it);
//! - else with `mqtt.auth.users_file`: the CONNECT user name, its password verified against
//!   the file's argon2id hash (off the async workers, at most [`VERIFY_SLOTS`] at once);
//! - else, when anonymous clients are allowed: none. An anonymous connection is not subject
//!   to the ACL: its client id is whatever it claims, so an ACL on it would be no boundary.
//!   Without `[mqtt.auth]` and `client_ca` this is the default (today's single-box setup);
//!   every batch is still verified against the agent's registered key by ingest.
//!
//! An identity is a valid agent id without `:`, white space or the reserved prefix
//! `shopfloor-gateway-` (the gateway's own client ids), and the MQTT client id must equal it
//! (so nobody takes over another identity's persistent session). Refusals get a CONNACK: 1
//! (protocol is not 3.1.1), 2 (client id differs from the identity), 4 (bad user name or
//! password), 5 (not authorized, no credentials, will not allowed, or the source address is
//! braked), then the connection is closed.
//!
//! ACL (prefix = `mqtt.topic_prefix`): an agent identity `X` may publish only to
//! `<prefix>/X/batch` and `<prefix>/X/status`, its will topic must be `<prefix>/X/status`, and
//! it may not subscribe (agents never do). Identities listed in `mqtt.auth.readers` may
//! subscribe to filters under `<prefix>/` and publish nothing; shared subscriptions
//! (`$share/…`) are refused to everyone (they can crash rumqttd, see [`crate::broker`]). A
//! denied PUBLISH closes the connection (MQTT 3.1.1 has no negative PUBACK; the payload is
//! never forwarded); a SUBSCRIBE with any denied filter is answered by the guard with a SUBACK
//! of 0x80 for every filter and nothing of it is forwarded (all or nothing).
//!
//! Invariants:
//! - the parser ([`wire`]) is pure functions on byte slices that never panic on any input;
//!   every packet is bounded before it is read (CONNECT and SUBSCRIBE at [`MAX_CONTROL`] bytes,
//!   everything else at the broker's payload limit plus overhead); PUBLISH payloads are
//!   streamed, never buffered whole; packets other than CONNECT, PUBLISH and SUBSCRIBE are
//!   forwarded byte for byte;
//! - only MQTT 3.1.1 reaches rumqttd (its v4 listener crashes on MQTT 5 traffic);
//! - nothing reaches rumqttd before the client is authenticated and its will allowed, and
//!   always with the internal credentials (the client's own are never forwarded);
//! - brute-force brake: per source address, [`BRAKE_FAILURES`] failed logins within
//!   [`BRAKE_WINDOW`] refuse every login from it for [`BRAKE_BLOCK`] (CONNACK 5, counted as
//!   `rate_limited`), at most [`BRAKE_ADDRESSES`] addresses tracked;
//! - the users file must not be accessible by group or others (Unix) and is re-read when it
//!   changes (new connections only; a bad new version is logged and the old one kept);
//! - the guard runs on its own runtime thread for the life of the process, like rumqttd.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::config::{GatewayConfig, GuardTls};
use crate::metrics::Metrics;

/// Largest CONNECT or SUBSCRIBE accepted (bytes after the fixed header).
pub const MAX_CONTROL: usize = 64 * 1024;
/// Bytes a packet may have beyond the broker's payload limit (topic, ids, header).
pub const PACKET_OVERHEAD: usize = 64 * 1024;
/// Concurrent client connections through the guard (rumqttd's router allows 4,096).
pub const MAX_CLIENTS: usize = 4000;
/// Concurrent argon2 verifications (each takes ~19 MiB and tens of milliseconds).
pub const VERIFY_SLOTS: usize = 2;
/// Brute-force brake: failures per address within the window…
pub const BRAKE_FAILURES: u32 = 5;
pub const BRAKE_WINDOW: Duration = Duration::from_secs(60);
/// …block the address for this long.
pub const BRAKE_BLOCK: Duration = Duration::from_secs(60);
/// Addresses tracked by the brake at most.
pub const BRAKE_ADDRESSES: usize = 10_000;
/// Client ids (and so identities) starting with this are the gateway's own.
pub const RESERVED_PREFIX: &str = "shopfloor-gateway-";
/// The internal user name rumqttd accepts (the password is random per process).
pub const INTERNAL_USER: &str = "shopfloor-guard";

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// The MQTT 3.1.1 wire format: pure functions on byte slices, never panicking on any input.
pub mod wire {
    /// The protocol's remaining-length limit.
    pub const MAX_REMAINING: usize = 268_435_455;
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const DISCONNECT: u8 = 14;

    /// CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
    pub const ACCEPTED: u8 = 0;
    pub const BAD_PROTOCOL_VERSION: u8 = 1;
    pub const IDENTIFIER_REJECTED: u8 = 2;
    pub const SERVER_UNAVAILABLE: u8 = 3;
    pub const BAD_CREDENTIALS: u8 = 4;
    pub const NOT_AUTHORIZED: u8 = 5;
    /// SUBACK failure.
    pub const SUBACK_FAILURE: u8 = 0x80;

    /// Why bytes are not an acceptable packet.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum WireError {
        /// Not well-formed MQTT 3.1.1.
        Malformed(&'static str),
        /// Larger than allowed.
        TooLarge { size: usize, max: usize },
        /// A CONNECT of another protocol level (3 = MQTT 3.1, 5 = MQTT 5).
        UnsupportedProtocol { level: u8 },
    }

    impl std::fmt::Display for WireError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                WireError::Malformed(why) => write!(f, "malformed packet: {why}"),
                WireError::TooLarge { size, max } => {
                    write!(f, "packet of {size} bytes exceeds the limit of {max}")
                }
                WireError::UnsupportedProtocol { level } => write!(
                    f,
                    "protocol level {level} (only MQTT 3.1.1, level 4, is accepted)"
                ),
            }
        }
    }

    impl std::error::Error for WireError {}

    /// A fixed header: packet type, flags, remaining length, and the header's own length.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct FixedHeader {
        pub kind: u8,
        pub flags: u8,
        pub remaining: usize,
        pub len: usize,
    }

    /// Parses a fixed header from the start of `buf`. `Ok(None)`: more bytes are needed (at
    /// most 5 in all). A remaining length above `max` is [`WireError::TooLarge`].
    pub fn fixed_header(buf: &[u8], max: usize) -> Result<Option<FixedHeader>, WireError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let kind = first >> 4;
        if kind == 0 || kind == 15 {
            return Err(WireError::Malformed("reserved packet type"));
        }
        let mut value = 0usize;
        let mut multiplier = 1usize;
        for i in 0..4 {
            let Some(&b) = buf.get(1 + i) else {
                return Ok(None);
            };
            value += usize::from(b & 0x7f) * multiplier;
            if b & 0x80 == 0 {
                if value > max {
                    return Err(WireError::TooLarge { size: value, max });
                }
                return Ok(Some(FixedHeader {
                    kind,
                    flags: first & 0x0f,
                    remaining: value,
                    len: 2 + i,
                }));
            }
            multiplier *= 128;
        }
        Err(WireError::Malformed("remaining length longer than 4 bytes"))
    }

    /// The remaining-length encoding of `n`.
    pub fn remaining_length(n: usize) -> Result<Vec<u8>, WireError> {
        if n > MAX_REMAINING {
            return Err(WireError::TooLarge {
                size: n,
                max: MAX_REMAINING,
            });
        }
        let mut out = Vec::with_capacity(4);
        let mut x = n;
        loop {
            let mut b = (x % 128) as u8;
            x /= 128;
            if x > 0 {
                b |= 0x80;
            }
            out.push(b);
            if x == 0 {
                return Ok(out);
            }
        }
    }

    struct Cursor<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Cursor<'a> {
        fn new(buf: &'a [u8]) -> Cursor<'a> {
            Cursor { buf, pos: 0 }
        }

        fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
            let end = self.pos.checked_add(n).ok_or(WireError::Malformed(what))?;
            let s = self
                .buf
                .get(self.pos..end)
                .ok_or(WireError::Malformed(what))?;
            self.pos = end;
            Ok(s)
        }

        fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
            Ok(self.take(1, what)?.first().copied().unwrap_or_default())
        }

        fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
            let b = self.take(2, what)?;
            match b {
                [h, l] => Ok(u16::from_be_bytes([*h, *l])),
                _ => Err(WireError::Malformed(what)),
            }
        }

        /// Two-byte length, then that many bytes.
        fn binary(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
            let n = self.u16(what)?;
            self.take(usize::from(n), what)
        }

        /// A UTF-8 string (§1.5.3): valid UTF-8 without U+0000.
        fn string(&mut self, what: &'static str) -> Result<&'a str, WireError> {
            let b = self.binary(what)?;
            let s = std::str::from_utf8(b).map_err(|_| WireError::Malformed(what))?;
            if s.contains('\0') {
                return Err(WireError::Malformed(what));
            }
            Ok(s)
        }

        fn is_empty(&self) -> bool {
            self.pos >= self.buf.len()
        }
    }

    /// The last will of a CONNECT.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Will<'a> {
        pub topic: &'a str,
        pub message: &'a [u8],
        pub qos: u8,
        pub retain: bool,
    }

    /// An MQTT 3.1.1 CONNECT.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Connect<'a> {
        pub clean_session: bool,
        pub keep_alive: u16,
        pub client_id: &'a str,
        pub will: Option<Will<'a>>,
        pub username: Option<&'a str>,
        pub password: Option<&'a [u8]>,
    }

    impl std::fmt::Debug for Connect<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Connect")
                .field("clean_session", &self.clean_session)
                .field("keep_alive", &self.keep_alive)
                .field("client_id", &self.client_id)
                .field("will", &self.will)
                .field("username", &self.username)
                .field("password", &self.password.map(|_| "***"))
                .finish()
        }
    }

    /// Parses the body (everything after the fixed header) of a CONNECT with fixed-header
    /// `flags`. Only protocol name `MQTT` level 4 is accepted; another level of `MQTT` or
    /// `MQIsdp` is [`WireError::UnsupportedProtocol`] (answer CONNACK 1).
    pub fn parse_connect(flags: u8, body: &[u8]) -> Result<Connect<'_>, WireError> {
        if flags != 0 {
            return Err(WireError::Malformed("CONNECT fixed-header flags must be 0"));
        }
        let mut c = Cursor::new(body);
        let name = c.binary("protocol name")?;
        let level = c.u8("protocol level")?;
        match (name, level) {
            (b"MQTT", 4) => {}
            (b"MQTT" | b"MQIsdp", level) => return Err(WireError::UnsupportedProtocol { level }),
            _ => return Err(WireError::Malformed("protocol name is not MQTT")),
        }
        let f = c.u8("connect flags")?;
        if f & 0x01 != 0 {
            return Err(WireError::Malformed("reserved connect flag is set"));
        }
        let will_flag = f & 0x04 != 0;
        let will_qos = (f >> 3) & 0x03;
        let will_retain = f & 0x20 != 0;
        let has_password = f & 0x40 != 0;
        let has_username = f & 0x80 != 0;
        if will_qos == 3 {
            return Err(WireError::Malformed("will QoS 3"));
        }
        if !will_flag && (will_qos != 0 || will_retain) {
            return Err(WireError::Malformed("will QoS or retain without a will"));
        }
        if has_password && !has_username {
            return Err(WireError::Malformed("password without user name"));
        }
        let keep_alive = c.u16("keep alive")?;
        let client_id = c.string("client id")?;
        let will = if will_flag {
            Some(Will {
                topic: c.string("will topic")?,
                message: c.binary("will message")?,
                qos: will_qos,
                retain: will_retain,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(c.string("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(c.binary("password")?)
        } else {
            None
        };
        if !c.is_empty() {
            return Err(WireError::Malformed("bytes after the CONNECT payload"));
        }
        Ok(Connect {
            clean_session: f & 0x02 != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
        })
    }

    fn put_binary(out: &mut Vec<u8>, b: &[u8], what: &'static str) -> Result<(), WireError> {
        let n = u16::try_from(b.len()).map_err(|_| WireError::Malformed(what))?;
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(b);
        Ok(())
    }

    fn packet(first: u8, body: &[u8]) -> Result<Vec<u8>, WireError> {
        let len = remaining_length(body.len())?;
        let mut out = Vec::with_capacity(1 + len.len() + body.len());
        out.push(first);
        out.extend_from_slice(&len);
        out.extend_from_slice(body);
        Ok(out)
    }

    /// The whole CONNECT packet of `c` with its user name and password replaced.
    pub fn encode_connect(
        c: &Connect<'_>,
        username: &str,
        password: &[u8],
    ) -> Result<Vec<u8>, WireError> {
        let mut body = Vec::with_capacity(64);
        put_binary(&mut body, b"MQTT", "protocol name")?;
        body.push(4);
        let mut f = 0x80 | 0x40;
        if c.clean_session {
            f |= 0x02;
        }
        if let Some(w) = &c.will {
            f |= 0x04 | ((w.qos & 0x03) << 3);
            if w.retain {
                f |= 0x20;
            }
        }
        body.push(f);
        body.extend_from_slice(&c.keep_alive.to_be_bytes());
        put_binary(&mut body, c.client_id.as_bytes(), "client id")?;
        if let Some(w) = &c.will {
            put_binary(&mut body, w.topic.as_bytes(), "will topic")?;
            put_binary(&mut body, w.message, "will message")?;
        }
        put_binary(&mut body, username.as_bytes(), "user name")?;
        put_binary(&mut body, password, "password")?;
        packet(CONNECT << 4, &body)
    }

    /// A CONNACK with `code` (session present 0: only refusals are answered by the guard).
    pub fn connack(code: u8) -> [u8; 4] {
        [CONNACK << 4, 2, 0, code]
    }

    /// The topic name of a PUBLISH with fixed-header `flags` whose body starts with `body`
    /// (at least the topic; the payload may follow or not).
    pub fn publish_topic(flags: u8, body: &[u8]) -> Result<&str, WireError> {
        if (flags >> 1) & 0x03 == 3 {
            return Err(WireError::Malformed("PUBLISH with QoS 3"));
        }
        let topic = Cursor::new(body).string("topic name")?;
        if topic.is_empty() {
            return Err(WireError::Malformed("empty topic name"));
        }
        if topic.contains(['+', '#']) {
            return Err(WireError::Malformed("wildcard in a topic name"));
        }
        Ok(topic)
    }

    /// A SUBSCRIBE: packet id and (filter, requested QoS) pairs.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Subscribe<'a> {
        pub pkid: u16,
        pub filters: Vec<(&'a str, u8)>,
    }

    /// Parses the body of a SUBSCRIBE with fixed-header `flags`.
    pub fn parse_subscribe(flags: u8, body: &[u8]) -> Result<Subscribe<'_>, WireError> {
        if flags != 0x02 {
            return Err(WireError::Malformed(
                "SUBSCRIBE fixed-header flags must be 2",
            ));
        }
        let mut c = Cursor::new(body);
        let pkid = c.u16("packet id")?;
        if pkid == 0 {
            return Err(WireError::Malformed("packet id 0"));
        }
        let mut filters = Vec::new();
        while !c.is_empty() {
            let filter = c.string("topic filter")?;
            if filter.is_empty() {
                return Err(WireError::Malformed("empty topic filter"));
            }
            let qos = c.u8("requested QoS")?;
            if qos > 2 {
                return Err(WireError::Malformed("requested QoS above 2"));
            }
            filters.push((filter, qos));
        }
        if filters.is_empty() {
            return Err(WireError::Malformed("SUBSCRIBE without a topic filter"));
        }
        Ok(Subscribe { pkid, filters })
    }

    /// A SUBACK for `pkid` with one return code per filter.
    pub fn suback(pkid: u16, codes: &[u8]) -> Result<Vec<u8>, WireError> {
        let mut body = Vec::with_capacity(2 + codes.len());
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(codes);
        packet(SUBACK << 4, &body)
    }
}

/// What a connection may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No verified identity: no ACL (allowed only with `allow_anonymous`).
    Anonymous,
    /// An agent: its own batch and status topics, nothing else.
    Agent(String),
    /// A reader (`mqtt.auth.readers`): subscribe under the prefix, publish nothing.
    Reader(String),
}

impl Role {
    /// The verified identity, if any.
    pub fn identity(&self) -> Option<&str> {
        match self {
            Role::Anonymous => None,
            Role::Agent(id) | Role::Reader(id) => Some(id),
        }
    }
}

/// `<prefix>/<id>/<rest>` → `rest`.
fn own_topic<'t>(prefix: &str, id: &str, topic: &'t str) -> Option<&'t str> {
    topic
        .strip_prefix(prefix)?
        .strip_prefix('/')?
        .strip_prefix(id)?
        .strip_prefix('/')
}

/// Whether `role` may publish to `topic`.
pub fn may_publish(prefix: &str, role: &Role, topic: &str) -> bool {
    match role {
        Role::Anonymous => true,
        Role::Agent(id) => matches!(own_topic(prefix, id, topic), Some("batch" | "status")),
        Role::Reader(_) => false,
    }
}

/// Whether `role` may leave a will on `topic`.
pub fn may_will(prefix: &str, role: &Role, topic: &str) -> bool {
    match role {
        Role::Anonymous => true,
        Role::Agent(id) => own_topic(prefix, id, topic) == Some("status"),
        Role::Reader(_) => false,
    }
}

/// Whether `role` may subscribe to `filter`. Shared subscriptions (`$share/…`) are refused to
/// everyone: a persistent-session client leaving one with unacknowledged messages panics
/// rumqttd 0.20's router ([`crate::broker`]).
pub fn may_subscribe(prefix: &str, role: &Role, filter: &str) -> bool {
    if filter.starts_with("$share/") {
        return false;
    }
    match role {
        Role::Anonymous => true,
        Role::Agent(_) => false,
        Role::Reader(_) => {
            filter == prefix
                || filter
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('/'))
        }
    }
}

/// Whether `name` can be an identity (a user in the users file, a reader, a certificate CN):
/// an agent id (`shopfloor_core::batch::check_agent_id`) of at most 128 characters without
/// `:` or white space, not starting with [`RESERVED_PREFIX`].
pub fn check_identity(name: &str) -> Result<(), String> {
    shopfloor_core::batch::check_agent_id(name)?;
    if name.chars().count() > 128 {
        return Err("longer than 128 characters".to_owned());
    }
    if let Some(c) = name.chars().find(|c| *c == ':' || c.is_whitespace()) {
        return Err(format!("{c:?} is not allowed in a user name"));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "names starting with {RESERVED_PREFIX:?} are reserved for the gateway"
        ));
    }
    Ok(())
}

// --- brute-force brake ---

#[derive(Debug, Clone, Copy)]
struct BrakeEntry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// Failed logins per source address: [`BRAKE_FAILURES`] within [`BRAKE_WINDOW`] block the
/// address for [`BRAKE_BLOCK`]. Time is passed in (tests).
#[derive(Debug, Default)]
pub struct Brake {
    entries: HashMap<IpAddr, BrakeEntry>,
}

impl Brake {
    /// Whether logins from `ip` are refused at `now`.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> bool {
        self.entries
            .get(&ip)
            .and_then(|e| e.blocked_until)
            .is_some_and(|t| now < t)
    }

    /// Records a failed login; true when `ip` is blocked from now on.
    pub fn failure(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.entries.contains_key(&ip) && self.entries.len() >= BRAKE_ADDRESSES {
            self.entries.retain(|_, e| {
                e.blocked_until.is_some_and(|t| now < t)
                    || now.saturating_duration_since(e.window_start) < BRAKE_WINDOW
            });
            if self.entries.len() >= BRAKE_ADDRESSES {
                // Full of live entries: evict the oldest window (bounded memory first).
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.window_start)
                    .map(|(ip, _)| *ip)
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        let e = self.entries.entry(ip).or_insert(BrakeEntry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.saturating_duration_since(e.window_start) >= BRAKE_WINDOW {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures += 1;
        if e.failures >= BRAKE_FAILURES {
            e.blocked_until = Some(now + BRAKE_BLOCK);
            e.failures = 0;
            e.window_start = now;
            return true;
        }
        false
    }
}

// --- users file ---

/// Parses a users file: `name:$argon2id$…` lines (PHC strings), `#` comments, blank lines.
/// Errors name the line.
pub fn parse_users(text: &str) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!("line {n}: expected name:$argon2id$…"));
        };
        check_identity(name).map_err(|e| format!("line {n}: user {name:?}: {e}"))?;
        check_hash(hash).map_err(|e| format!("line {n}: user {name:?}: {e}"))?;
        if out.insert(name.to_owned(), hash.to_owned()).is_some() {
            return Err(format!("line {n}: user {name:?} is listed twice"));
        }
    }
    Ok(out)
}

fn check_hash(hash: &str) -> Result<(), String> {
    let h = argon2::PasswordHash::new(hash).map_err(|e| format!("not a PHC password hash: {e}"))?;
    if h.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "hash algorithm {} (expected argon2id)",
            h.algorithm.as_str()
        ));
    }
    if h.hash.is_none() || h.salt.is_none() {
        return Err("the hash has no salt or no output".to_owned());
    }
    argon2::Params::try_from(&h).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok(())
}

/// Refuses a file that group or others may access (Unix), like the agent's key.
fn check_private(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{}: not a regular file", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: accessible by group or others (mode {mode:04o}); run chmod 600 on it",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Reads and checks a users file (permissions, then every line).
pub fn load_users(path: &Path) -> Result<HashMap<String, String>, String> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_users(&text).map_err(|e| format!("{}: {e}", path.display()))
}

type Stamp = (SystemTime, u64);
/// The users file as last read: when, and name → PHC hash.
type UserTable = (Option<Stamp>, Arc<HashMap<String, String>>);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The users file, re-read when its modification time or size changes.
struct UserDb {
    path: PathBuf,
    state: Mutex<UserTable>,
}

impl std::fmt::Debug for UserDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hashes.
        f.debug_struct("UserDb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl UserDb {
    fn open(path: &Path) -> Result<UserDb, String> {
        let st = stamp(path);
        let users = load_users(path)?;
        Ok(UserDb {
            path: path.to_owned(),
            state: Mutex::new((st, Arc::new(users))),
        })
    }

    /// The hash of `name` (blocking: may re-read the file).
    fn lookup(&self, name: &str) -> Option<String> {
        let now = stamp(&self.path);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if now.is_some() && now != st.0 {
            match load_users(&self.path) {
                Ok(users) => {
                    tracing::info!(file = %self.path.display(), users = users.len(), "mqtt guard: users file re-read");
                    *st = (now, Arc::new(users));
                }
                Err(e) => {
                    tracing::error!(error = %e, "mqtt guard: the changed users file is not valid; keeping the previous version");
                    st.0 = now;
                }
            }
        }
        st.1.get(name).cloned()
    }

    /// Verifies `password` for `name` (blocking; an unknown name costs a verification too).
    fn verify(&self, name: &str, password: &[u8]) -> bool {
        let hash = self.lookup(name);
        let Some(phc) = hash.as_deref().or_else(|| dummy_hash()) else {
            return false;
        };
        let ok = verify_password(phc, password);
        ok && hash.is_some()
    }
}

fn verify_password(phc: &str, password: &[u8]) -> bool {
    use argon2::PasswordVerifier as _;
    match argon2::PasswordHash::new(phc) {
        Ok(h) => argon2::Argon2::default()
            .verify_password(password, &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password with the default parameters, so an unknown user name costs
/// what a known one does.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| {
            random_token()
                .ok()
                .and_then(|p| hash_password(p.as_bytes()).ok())
        })
        .as_deref()
}

/// An argon2id hash (PHC string) of `password` with the default parameters (m = 19 MiB,
/// t = 2, p = 1) and a random 16-byte salt.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    use argon2::PasswordHasher as _;
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no OS randomness: {e}"))?;
    let salt = argon2::password_hash::SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// 32 random bytes, base64url without padding (passwords).
pub fn random_token() -> Result<String, String> {
    use base64::Engine as _;
    let mut b = [0u8; 32];
    getrandom::getrandom(&mut b).map_err(|e| format!("no OS randomness: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

// --- TLS ---

fn pem_certs(
    field: &str,
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, (String, String)> {
    let bad = |r: String| (field.to_owned(), format!("{}: {r}", path.display()));
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut bytes.as_slice()).collect();
    let certs = certs.map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".to_owned()));
    }
    Ok(certs)
}

/// The TLS server configuration of `[mqtt.tls]` (ring provider; client certificates required
/// and verified against `client_ca` when it is set). Errors: (field, reason).
pub fn server_tls(tls: &GuardTls) -> Result<Arc<rustls::ServerConfig>, (String, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = pem_certs("mqtt.tls.cert", &tls.cert)?;
    let bad_key = |r: String| {
        (
            "mqtt.tls.key".to_owned(),
            format!("{}: {r}", tls.key.display()),
        )
    };
    let kpem = std::fs::read(&tls.key).map_err(|e| bad_key(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut kpem.as_slice())
        .map_err(|e| bad_key(e.to_string()))?
        .ok_or_else(|| bad_key("no PEM private key in the file".to_owned()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("mqtt.tls".to_owned(), e.to_string()))?;
    let builder = match &tls.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in pem_certs("mqtt.tls.client_ca", ca)? {
                roots.add(c).map_err(|e| {
                    (
                        "mqtt.tls.client_ca".to_owned(),
                        format!("{}: {e}", ca.display()),
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| {
                (
                    "mqtt.tls.client_ca".to_owned(),
                    format!("{}: {e}", ca.display()),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad_key(format!("does not fit mqtt.tls.cert: {e}")))?;
    Ok(Arc::new(config))
}

/// The subject CN of the first (end-entity) certificate.
pub fn subject_cn(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    let mut cns = cert.subject().iter_common_name();
    let cn = cns
        .next()
        .ok_or_else(|| "the client certificate has no subject CN".to_owned())?;
    if cns.next().is_some() {
        return Err("the client certificate has more than one subject CN".to_owned());
    }
    cn.as_str()
        .map(str::to_owned)
        .map_err(|e| format!("the client certificate's CN is not text: {e}"))
}

// --- policy ---

/// What the guard enforces, from `[mqtt]`, `[mqtt.tls]` and `[mqtt.auth]` (files read and
/// checked).
#[derive(Debug)]
pub struct Policy {
    prefix: String,
    tls: Option<Arc<rustls::ServerConfig>>,
    client_certs: bool,
    users: Option<Arc<UserDb>>,
    allow_anonymous: bool,
    readers: BTreeSet<String>,
    max_packet: usize,
}

impl Policy {
    /// Reads the TLS files and the users file; errors are (field, reason), all of them.
    /// `max_payload`: the broker's payload limit.
    pub fn from_config(
        cfg: &GatewayConfig,
        max_payload: usize,
    ) -> Result<Policy, Vec<(String, String)>> {
        let m = &cfg.mqtt;
        let mut errors = Vec::new();
        let tls = match &m.tls {
            Some(t) => match server_tls(t) {
                Ok(c) => Some(c),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        let users = match m.auth.as_ref().and_then(|a| a.users_file.as_ref()) {
            Some(f) => match UserDb::open(f) {
                Ok(db) => Some(Arc::new(db)),
                Err(e) => {
                    errors.push(("mqtt.auth.users_file".to_owned(), e));
                    None
                }
            },
            None => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Policy {
            prefix: m.topic_prefix.clone(),
            tls,
            client_certs: m.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            users,
            allow_anonymous: m.allow_anonymous(),
            readers: m
                .auth
                .as_ref()
                .map(|a| a.readers.iter().cloned().collect())
                .unwrap_or_default(),
            max_packet: max_payload
                .saturating_add(PACKET_OVERHEAD)
                .min(wire::MAX_REMAINING),
        })
    }
}

/// Checks the guard's files of `cfg` (nothing when `mqtt.embedded = false`): (field, reason).
pub fn check_config(cfg: &GatewayConfig) -> Vec<(String, String)> {
    if !cfg.mqtt.embedded {
        return Vec::new();
    }
    match Policy::from_config(cfg, 0) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    }
}

// --- the internal broker endpoint ---

/// Where and how the gateway's own consumer reaches rumqttd behind the guard.
#[derive(Clone, PartialEq, Eq)]
pub struct Internal {
    pub addr: SocketAddr,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Internal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Internal")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

fn internals() -> &'static Mutex<HashMap<SocketAddr, Internal>> {
    static MAP: OnceLock<Mutex<HashMap<SocketAddr, Internal>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The internal endpoint of the embedded broker started in this process for `mqtt.listen`
/// (`None` if none was started).
pub fn internal(listen: SocketAddr) -> Option<Internal> {
    internals()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&listen)
        .cloned()
}

pub(crate) fn register_internal(listen: SocketAddr, i: Internal) {
    internals()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(listen, i);
}

/// Connects to rumqttd with the internal credentials and expects CONNACK 0 (blocking): proves
/// that the port is our broker and that it works.
pub(crate) fn probe(i: &Internal, timeout: Duration) -> Result<(), String> {
    let connect = wire::Connect {
        clean_session: true,
        keep_alive: 10,
        client_id: "shopfloor-gateway-probe",
        will: None,
        username: None,
        password: None,
    };
    let packet = wire::encode_connect(&connect, &i.username, i.password.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut s =
        std::net::TcpStream::connect_timeout(&i.addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.write_all(&packet).map_err(|e| e.to_string())?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).map_err(|e| e.to_string())?;
    if ack != wire::connack(wire::ACCEPTED) {
        return Err(format!("unexpected answer {ack:02x?} (not our broker?)"));
    }
    let _ = s.write_all(&[wire::DISCONNECT << 4, 0]);
    Ok(())
}

// --- the guard ---

struct Shared {
    policy: Policy,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    internal: Internal,
    metrics: Arc<Metrics>,
    brake: Mutex<Brake>,
    verify_slots: Semaphore,
}

/// Starts the guard on its own runtime thread ("mqtt-guard"), accepting on `listener` (bound
/// by the caller, so a taken port is reported there) for the life of the process.
pub fn spawn(
    listener: std::net::TcpListener,
    policy: Policy,
    internal: Internal,
    metrics: Arc<Metrics>,
) -> Result<(), String> {
    let listen = listener
        .local_addr()
        .map_err(|e| format!("mqtt.listen: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("mqtt.listen: {listen}: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("mqtt-guard")
        .enable_all()
        .build()
        .map_err(|e| format!("mqtt.listen: cannot start the guard's runtime: {e}"))?;
    let shared = Arc::new(Shared {
        acceptor: policy.tls.clone().map(tokio_rustls::TlsAcceptor::from),
        policy,
        internal,
        metrics,
        brake: Mutex::new(Brake::default()),
        verify_slots: Semaphore::new(VERIFY_SLOTS),
    });
    let tls = shared.acceptor.is_some();
    std::thread::Builder::new()
        .name("mqtt-guard".to_owned())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(%listen, error = %e, "mqtt guard: cannot listen");
                        return;
                    }
                };
                accept_loop(listener, shared).await;
            });
        })
        .map_err(|e| format!("mqtt.listen: cannot start the guard thread: {e}"))?;
    tracing::info!(%listen, tls, "mqtt guard listening (MQTT 3.1.1)");
    Ok(())
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: do not spin.
                tracing::warn!(error = %e, "mqtt guard: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "mqtt guard: {MAX_CLIENTS} connections open; refusing");
            drop(tcp);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(&shared, tcp, peer).await;
            drop(permit);
        });
    }
}

async fn handle(s: &Arc<Shared>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = &s.acceptor else {
        session(s, tcp, peer, None).await;
        return;
    };
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let cert = s.policy.client_certs.then(|| {
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .ok_or_else(|| "no client certificate".to_owned())
                    .and_then(|c| subject_cn(c.as_ref()))
            });
            session(s, stream, peer, cert).await;
        }
        Ok(Err(e)) => {
            s.metrics.guard_connection("tls_failed");
            tracing::info!(%peer, error = %e, "mqtt guard: TLS handshake failed");
        }
        Err(_) => {
            s.metrics.guard_connection("tls_failed");
            tracing::info!(%peer, "mqtt guard: TLS handshake timed out");
        }
    }
}

/// Why a forwarding loop ended early.
#[derive(Debug)]
enum Stop {
    Io(std::io::Error),
    Wire(wire::WireError),
    Denied,
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Io(e)
    }
}

impl From<wire::WireError> for Stop {
    fn from(e: wire::WireError) -> Stop {
        Stop::Wire(e)
    }
}

/// Reads one fixed header; `None` at a clean end of stream before it.
async fn read_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<(wire::FixedHeader, [u8; 5])>, Stop> {
    let mut buf = [0u8; 5];
    let mut n = 0;
    loop {
        let b = match r.read_u8().await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && n == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(slot) = buf.get_mut(n) else {
            return Err(wire::WireError::Malformed("fixed header too long").into());
        };
        *slot = b;
        n += 1;
        if let Some(h) = wire::fixed_header(buf.get(..n).unwrap_or_default(), max)? {
            return Ok(Some((h, buf)));
        }
    }
}

async fn read_body<R: AsyncRead + Unpin>(r: &mut R, n: usize) -> Result<Vec<u8>, Stop> {
    let mut body = vec![0u8; n];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// Copies exactly `n` bytes.
async fn copy_exact<R, W>(r: &mut R, w: &mut W, n: usize) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let want = n as u64;
    let copied = tokio::io::copy(&mut r.take(want), w).await?;
    if copied < want {
        return Err(Stop::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// A refused login: CONNACK code, metric outcome, log reason.
struct Refusal {
    code: u8,
    outcome: &'static str,
    reason: String,
}

fn refuse(code: u8, outcome: &'static str, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        outcome,
        reason: reason.into(),
    }
}

impl Shared {
    fn braked(&self, ip: IpAddr) -> bool {
        self.brake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .blocked(ip, Instant::now())
    }

    fn failed(&self, ip: IpAddr) {
        let blocked = self
            .brake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failure(ip, Instant::now());
        if blocked {
            tracing::warn!(%ip, "mqtt guard: {BRAKE_FAILURES} failed logins; refusing this address for {} s", BRAKE_BLOCK.as_secs());
        }
    }

    /// The role of a connection, or why it is refused.
    async fn authenticate(
        &self,
        c: &wire::Connect<'_>,
        peer: SocketAddr,
        cert: Option<Result<String, String>>,
    ) -> Result<Role, Refusal> {
        let ip = peer.ip();
        if self.braked(ip) {
            return Err(refuse(
                wire::NOT_AUTHORIZED,
                "rate_limited",
                "too many failed logins from this address",
            ));
        }
        let identity = match cert {
            Some(Ok(cn)) => {
                if let Some(u) = c.username
                    && u != cn
                {
                    self.failed(ip);
                    return Err(refuse(
                        wire::BAD_CREDENTIALS,
                        "auth_failed",
                        format!("user name {u:?} differs from the certificate's CN {cn:?}"),
                    ));
                }
                Some(cn)
            }
            Some(Err(why)) => return Err(refuse(wire::NOT_AUTHORIZED, "not_authorized", why)),
            None => match (c.username, &self.policy.users) {
                (Some(user), Some(db)) => {
                    let Ok(_slot) = self.verify_slots.acquire().await else {
                        return Err(refuse(wire::SERVER_UNAVAILABLE, "auth_failed", "closing"));
                    };
                    // Attempts queued behind the slots while the address got braked.
                    if self.braked(ip) {
                        return Err(refuse(
                            wire::NOT_AUTHORIZED,
                            "rate_limited",
                            "too many failed logins from this address",
                        ));
                    }
                    let db = db.clone();
                    let name = user.to_owned();
                    let password = c.password.unwrap_or_default().to_vec();
                    let ok = tokio::task::spawn_blocking(move || db.verify(&name, &password))
                        .await
                        .unwrap_or(false);
                    if !ok {
                        self.failed(ip);
                        return Err(refuse(
                            wire::BAD_CREDENTIALS,
                            "auth_failed",
                            format!("bad user name or password (user {user:?})"),
                        ));
                    }
                    Some(user.to_owned())
                }
                _ if self.policy.allow_anonymous => None,
                _ => {
                    return Err(refuse(
                        wire::NOT_AUTHORIZED,
                        "not_authorized",
                        "no credentials, and anonymous clients are not allowed",
                    ));
                }
            },
        };
        let Some(id) = identity else {
            return Ok(Role::Anonymous);
        };
        if let Err(why) = check_identity(&id) {
            return Err(refuse(
                wire::NOT_AUTHORIZED,
                "not_authorized",
                format!("identity {id:?}: {why}"),
            ));
        }
        if c.client_id != id {
            return Err(refuse(
                wire::IDENTIFIER_REJECTED,
                "not_authorized",
                format!("client id {:?} must equal the identity {id:?}", c.client_id),
            ));
        }
        Ok(if self.policy.readers.contains(&id) {
            Role::Reader(id)
        } else {
            Role::Agent(id)
        })
    }
}

/// One client connection, from its CONNECT to its end.
async fn session<S>(
    s: &Arc<Shared>,
    stream: S,
    peer: SocketAddr,
    cert: Option<Result<String, String>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let mut rd = BufReader::new(rd);
    let mut wr = BufWriter::new(wr);
    let head = match tokio::time::timeout(CONNECT_TIMEOUT, read_header(&mut rd, MAX_CONTROL)).await
    {
        Ok(Ok(Some((h, _)))) if h.kind == wire::CONNECT => h,
        Ok(Ok(None)) => return, // a port probe
        Ok(Ok(Some(_))) => {
            s.metrics.guard_connection("bad_protocol");
            tracing::info!(%peer, "mqtt guard: first packet is not CONNECT; closing");
            return;
        }
        Ok(Err(e)) => {
            s.metrics.guard_connection("bad_protocol");
            tracing::info!(%peer, error = ?e, "mqtt guard: bad CONNECT; closing");
            return;
        }
        Err(_) => {
            s.metrics.guard_connection("bad_protocol");
            tracing::info!(%peer, "mqtt guard: no CONNECT within {} s; closing", CONNECT_TIMEOUT.as_secs());
            return;
        }
    };
    let body = match tokio::time::timeout(CONNECT_TIMEOUT, read_body(&mut rd, head.remaining)).await
    {
        Ok(Ok(b)) => b,
        _ => {
            s.metrics.guard_connection("bad_protocol");
            tracing::info!(%peer, "mqtt guard: incomplete CONNECT; closing");
            return;
        }
    };
    let connect = match wire::parse_connect(head.flags, &body) {
        Ok(c) => c,
        Err(e) => {
            if matches!(e, wire::WireError::UnsupportedProtocol { .. }) {
                let _ = wr
                    .write_all(&wire::connack(wire::BAD_PROTOCOL_VERSION))
                    .await;
                let _ = wr.flush().await;
            }
            s.metrics.guard_connection("bad_protocol");
            tracing::info!(%peer, error = %e, "mqtt guard: CONNECT refused");
            let _ = wr.shutdown().await;
            return;
        }
    };
    let refused = match s.authenticate(&connect, peer, cert).await {
        Ok(role) => match &connect.will {
            Some(w) if !may_will(&s.policy.prefix, &role, w.topic) => {
                s.metrics.guard_denied("will");
                Err(refuse(
                    wire::NOT_AUTHORIZED,
                    "not_authorized",
                    format!("will topic {:?} not allowed", w.topic),
                ))
            }
            _ => Ok(role),
        },
        Err(r) => Err(r),
    };
    let role = match refused {
        Ok(role) => role,
        Err(r) => {
            s.metrics.guard_connection(r.outcome);
            tracing::warn!(%peer, client_id = ?connect.client_id, username = ?connect.username, code = r.code, reason = %r.reason, "mqtt guard: login refused");
            let _ = wr.write_all(&wire::connack(r.code)).await;
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
            return;
        }
    };
    let upstream = match tokio::time::timeout(UPSTREAM_TIMEOUT, TcpStream::connect(s.internal.addr))
        .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::error!(%peer, error = %e, "mqtt guard: the embedded broker is unreachable");
            let _ = wr.write_all(&wire::connack(wire::SERVER_UNAVAILABLE)).await;
            let _ = wr.flush().await;
            return;
        }
        Err(_) => {
            tracing::error!(%peer, "mqtt guard: the embedded broker did not accept within 5 s");
            let _ = wr.write_all(&wire::connack(wire::SERVER_UNAVAILABLE)).await;
            let _ = wr.flush().await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let rewritten = match wire::encode_connect(
        &connect,
        &s.internal.username,
        s.internal.password.as_bytes(),
    ) {
        Ok(p) => p,
        Err(e) => {
            s.metrics.guard_connection("bad_protocol");
            tracing::info!(%peer, error = %e, "mqtt guard: CONNECT cannot be re-encoded");
            return;
        }
    };
    let client_id = connect.client_id.to_owned();
    drop(body);
    let (br, bw) = upstream.into_split();
    let mut bw = BufWriter::new(bw);
    if let Err(e) = async {
        bw.write_all(&rewritten).await?;
        bw.flush().await
    }
    .await
    {
        tracing::error!(%peer, error = %e, "mqtt guard: cannot write to the embedded broker");
        return;
    }
    s.metrics.guard_connection("accepted");
    tracing::info!(%peer, client_id = ?client_id, identity = ?role.identity(), "mqtt guard: connection accepted");

    let client_w = tokio::sync::Mutex::new(wr);
    let outcome = tokio::select! {
        r = client_to_broker(s, &role, peer, &mut rd, &mut bw, &client_w) => r,
        r = broker_to_client(s, br, &client_w) => r,
    };
    match outcome {
        Ok(()) | Err(Stop::Denied) => {}
        Err(Stop::Io(e)) => {
            tracing::debug!(%peer, client_id = ?client_id, error = %e, "mqtt guard: connection ended");
        }
        Err(Stop::Wire(e)) => {
            tracing::info!(%peer, client_id = ?client_id, error = %e, "mqtt guard: protocol error; closing");
        }
    }
    let mut w = client_w.lock().await;
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

type ClientWriter<S> = tokio::sync::Mutex<BufWriter<tokio::io::WriteHalf<S>>>;

/// Client → broker: PUBLISH topics and SUBSCRIBE filters checked, the rest copied.
async fn client_to_broker<S, R, W>(
    s: &Shared,
    role: &Role,
    peer: SocketAddr,
    rd: &mut BufReader<R>,
    bw: &mut BufWriter<W>,
    client_w: &ClientWriter<S>,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let prefix = &s.policy.prefix;
    loop {
        let Some((h, hb)) = read_header(rd, s.policy.max_packet).await? else {
            return Ok(());
        };
        let head = hb.get(..h.len).unwrap_or_default();
        match h.kind {
            wire::PUBLISH => {
                if h.remaining < 2 {
                    return Err(wire::WireError::Malformed("PUBLISH without a topic").into());
                }
                let mut vh = vec![0u8; 2];
                rd.read_exact(&mut vh).await?;
                let topic_len = usize::from(u16::from_be_bytes([vh[0], vh[1]]));
                if 2 + topic_len > h.remaining {
                    return Err(wire::WireError::Malformed("topic longer than the packet").into());
                }
                vh.resize(2 + topic_len, 0);
                rd.read_exact(&mut vh[2..]).await?;
                let topic = wire::publish_topic(h.flags, &vh)?;
                if !may_publish(prefix, role, topic) {
                    // What was allowed before it still goes out; this one never does.
                    bw.flush().await?;
                    s.metrics.guard_denied("publish");
                    tracing::warn!(%peer, identity = ?role.identity(), topic = ?topic, "mqtt guard: publish denied by the ACL; closing the connection");
                    return Err(Stop::Denied);
                }
                bw.write_all(head).await?;
                bw.write_all(&vh).await?;
                copy_exact(rd, bw, h.remaining - vh.len()).await?;
            }
            wire::SUBSCRIBE => {
                if h.remaining > MAX_CONTROL {
                    return Err(wire::WireError::TooLarge {
                        size: h.remaining,
                        max: MAX_CONTROL,
                    }
                    .into());
                }
                let body = read_body(rd, h.remaining).await?;
                let sub = wire::parse_subscribe(h.flags, &body)?;
                let denied: Vec<&str> = sub
                    .filters
                    .iter()
                    .map(|(f, _)| *f)
                    .filter(|f| !may_subscribe(prefix, role, f))
                    .collect();
                if denied.is_empty() {
                    bw.write_all(head).await?;
                    bw.write_all(&body).await?;
                } else {
                    s.metrics.guard_denied("subscribe");
                    tracing::warn!(%peer, identity = ?role.identity(), filters = ?denied, "mqtt guard: subscription denied by the ACL (SUBACK 0x80)");
                    let ack =
                        wire::suback(sub.pkid, &vec![wire::SUBACK_FAILURE; sub.filters.len()])?;
                    let mut w = client_w.lock().await;
                    w.write_all(&ack).await?;
                    w.flush().await?;
                }
            }
            wire::CONNECT => {
                return Err(wire::WireError::Malformed("second CONNECT").into());
            }
            _ => {
                bw.write_all(head).await?;
                copy_exact(rd, bw, h.remaining).await?;
            }
        }
        if rd.buffer().is_empty() {
            bw.flush().await?;
        }
    }
}

/// Broker → client: whole packets (so a SUBACK of the guard never lands inside one).
async fn broker_to_client<S>(
    s: &Shared,
    br: tokio::net::tcp::OwnedReadHalf,
    client_w: &ClientWriter<S>,
) -> Result<(), Stop>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut br = BufReader::new(br);
    let max = s.policy.max_packet;
    loop {
        let Some((h, hb)) = read_header(&mut br, max).await? else {
            return Ok(());
        };
        let mut w = client_w.lock().await;
        w.write_all(hb.get(..h.len).unwrap_or_default()).await?;
        copy_exact(&mut br, &mut *w, h.remaining).await?;
        if br.buffer().is_empty() {
            w.flush().await?;
        }
    }
}

// --- `shopfloor-gateway mqtt-user` ---

fn read_users_lines(file: &Path) -> Result<Vec<String>, (u8, String)> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            parse_users(&text).map_err(|e| (2, format!("--file: {}: {e}", file.display())))?;
            Ok(text.lines().map(str::to_owned).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err((1, format!("--file: {}: {e}", file.display()))),
    }
}

/// Writes `lines` to `file` atomically (temporary file with mode 0600, fsync, rename).
fn write_users(file: &Path, lines: &[String]) -> Result<(), String> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "users".to_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut text = lines.join("\n");
    text.push('\n');
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("--file: {}: {e}", file.display())
    })
}

fn line_name(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    t.split_once(':').map(|(n, _)| n)
}

/// `shopfloor-gateway mqtt-user add`: adds `name` to the users file (or sets a new password)
/// and prints the password once: a random one, or the one read from stdin.
pub fn mqtt_user_add(file: &Path, name: &str, password_stdin: bool) -> ExitCode {
    if let Err(e) = check_identity(name) {
        eprintln!("error: --name: {name:?}: {e}");
        return ExitCode::from(2);
    }
    let (password, generated) = if password_stdin {
        let mut text = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("error: --password-stdin: {e}");
            return ExitCode::from(2);
        }
        let p = text.trim_end_matches(['\r', '\n']).to_owned();
        if p.is_empty() {
            eprintln!("error: --password-stdin: the password is empty");
            return ExitCode::from(2);
        }
        (p, false)
    } else {
        match random_token() {
            Ok(p) => (p, true),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let mut lines = match read_users_lines(file) {
        Ok(l) => l,
        Err((code, e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(code);
        }
    };
    let hash = match hash_password(password.as_bytes()) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot hash the password: {e}");
            return ExitCode::from(1);
        }
    };
    let entry = format!("{name}:{hash}");
    let replaced = match lines.iter_mut().find(|l| line_name(l) == Some(name)) {
        Some(l) => {
            *l = entry;
            true
        }
        None => {
            lines.push(entry);
            false
        }
    };
    if let Err(e) = write_users(file, &lines) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    if generated {
        println!("{password}");
    }
    eprintln!(
        "user {name:?} {} in {}{}",
        if replaced { "updated" } else { "added" },
        file.display(),
        if generated {
            "; the password above is shown only once"
        } else {
            ""
        }
    );
    ExitCode::SUCCESS
}

/// `shopfloor-gateway mqtt-user remove`.
pub fn mqtt_user_remove(file: &Path, name: &str) -> ExitCode {
    let mut lines = match read_users_lines(file) {
        Ok(l) => l,
        Err((code, e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(code);
        }
    };
    let before = lines.len();
    lines.retain(|l| line_name(l) != Some(name));
    if lines.len() == before {
        eprintln!("error: --name: no user {name:?} in {}", file.display());
        return ExitCode::from(2);
    }
    if let Err(e) = write_users(file, &lines) {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    eprintln!("user {name:?} removed from {}", file.display());
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::wire::*;
    use super::*;

    /// A cheap argon2id hash (tests only; the default parameters are slow unoptimised).
    fn cheap_hash(password: &str) -> String {
        use argon2::PasswordHasher as _;
        let salt = argon2::password_hash::SaltString::encode_b64(b"0123456789abcdef").unwrap();
        argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
    }

    fn sample_connect() -> Connect<'static> {
        Connect {
            clean_session: false,
            keep_alive: 30,
            client_id: "agent-a",
            will: Some(Will {
                topic: "shopfloor/v1/agent-a/status",
                message: b"{\"status\":\"offline\"}",
                qos: 1,
                retain: true,
            }),
            username: Some("agent-a"),
            password: Some(b"secret"),
        }
    }

    fn body_of(packet: &[u8]) -> (FixedHeader, &[u8]) {
        let h = fixed_header(packet, MAX_REMAINING).unwrap().unwrap();
        (h, &packet[h.len..])
    }

    /// A tiny deterministic generator (no dependency).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    #[test]
    fn fixed_headers() {
        assert_eq!(fixed_header(&[], 100), Ok(None));
        assert_eq!(fixed_header(&[0x30], 100), Ok(None));
        assert_eq!(
            fixed_header(&[0x32, 0x05], 100),
            Ok(Some(FixedHeader {
                kind: 3,
                flags: 2,
                remaining: 5,
                len: 2
            }))
        );
        assert_eq!(fixed_header(&[0x30, 0x80], 100), Ok(None));
        assert_eq!(
            fixed_header(&[0x30, 0xc1, 0x02], 1000).unwrap().unwrap(),
            FixedHeader {
                kind: 3,
                flags: 0,
                remaining: 321,
                len: 3
            }
        );
        assert_eq!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0x7f], MAX_REMAINING)
                .unwrap()
                .unwrap()
                .remaining,
            MAX_REMAINING
        );
        assert!(matches!(
            fixed_header(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], MAX_REMAINING),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            fixed_header(&[0x30, 0xc1, 0x02], 100),
            Err(WireError::TooLarge {
                size: 321,
                max: 100
            })
        ));
        assert!(fixed_header(&[0x00, 0x00], 100).is_err());
        assert!(fixed_header(&[0xf0, 0x00], 100).is_err());
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_REMAINING,
        ] {
            let mut p = vec![0x30];
            p.extend(remaining_length(n).unwrap());
            let h = fixed_header(&p, MAX_REMAINING).unwrap().unwrap();
            assert_eq!((h.remaining, h.len), (n, p.len()));
        }
        assert!(remaining_length(MAX_REMAINING + 1).is_err());
    }

    #[test]
    fn connect_round_trip_replaces_credentials() {
        let c = sample_connect();
        let p = encode_connect(&c, "agent-a", b"secret").unwrap();
        let (h, body) = body_of(&p);
        assert_eq!(h.kind, CONNECT);
        assert_eq!(parse_connect(h.flags, body).unwrap(), c);

        let p = encode_connect(&c, INTERNAL_USER, b"internal").unwrap();
        let (h, body) = body_of(&p);
        let r = parse_connect(h.flags, body).unwrap();
        assert_eq!(r.username, Some(INTERNAL_USER));
        assert_eq!(r.password, Some(&b"internal"[..]));
        assert_eq!(
            (r.client_id, r.clean_session, r.keep_alive, &r.will),
            (c.client_id, c.clean_session, c.keep_alive, &c.will)
        );
        // Without will and credentials, clean session.
        let bare = Connect {
            clean_session: true,
            keep_alive: 5,
            client_id: "",
            will: None,
            username: None,
            password: None,
        };
        let p = encode_connect(&bare, "u", b"p").unwrap();
        let (h, body) = body_of(&p);
        let r = parse_connect(h.flags, body).unwrap();
        assert!(r.clean_session && r.will.is_none() && r.client_id.is_empty());
        assert!(!format!("{r:?}").contains("\"p\""), "password redacted");
    }

    #[test]
    fn connect_of_a_real_client_parses() {
        // mosquitto_pub -V mqttv311 -i agent-a -u agent-a -P pw -k 60 (captured layout).
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xc2, 0, 60];
        body.extend([0, 7]);
        body.extend(b"agent-a");
        body.extend([0, 7]);
        body.extend(b"agent-a");
        body.extend([0, 2]);
        body.extend(b"pw");
        let c = parse_connect(0, &body).unwrap();
        assert_eq!(c.client_id, "agent-a");
        assert_eq!(c.username, Some("agent-a"));
        assert_eq!(c.password, Some(&b"pw"[..]));
        assert!(c.clean_session);
        assert_eq!(c.keep_alive, 60);
    }

    #[test]
    fn other_protocol_levels_are_unsupported_not_malformed() {
        let v5 = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 0];
        assert_eq!(
            parse_connect(0, &v5),
            Err(WireError::UnsupportedProtocol { level: 5 })
        );
        let mut v31 = vec![0, 6];
        v31.extend(b"MQIsdp");
        v31.extend([3, 0x02, 0, 60, 0, 1, b'x']);
        assert_eq!(
            parse_connect(0, &v31),
            Err(WireError::UnsupportedProtocol { level: 3 })
        );
        let http = b"GET / HTTP/1.1\r\n";
        assert!(matches!(
            parse_connect(0, http),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn connect_flag_rules() {
        let base = |flags: u8| {
            let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'x'];
            if flags & 0x80 != 0 {
                b.extend([0, 1, b'u']);
            }
            if flags & 0x40 != 0 {
                b.extend([0, 1, b'p']);
            }
            b
        };
        assert!(parse_connect(0, &base(0x02)).is_ok());
        assert!(parse_connect(0, &base(0xc2)).is_ok());
        assert!(parse_connect(0, &base(0x03)).is_err(), "reserved bit");
        assert!(
            parse_connect(0, &base(0x42)).is_err(),
            "password without user"
        );
        assert!(
            parse_connect(0, &base(0x22)).is_err(),
            "retain without will"
        );
        assert!(
            parse_connect(0, &base(0x08)).is_err(),
            "will QoS without will"
        );
        assert!(parse_connect(1, &base(0x02)).is_err(), "header flags");
        let mut trailing = base(0x02);
        trailing.push(0);
        assert!(parse_connect(0, &trailing).is_err(), "trailing bytes");
        let mut nul = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60, 0, 2, b'a', 0];
        assert!(parse_connect(0, &nul).is_err(), "NUL in client id");
        nul[13] = 0xff;
        assert!(parse_connect(0, &nul).is_err(), "not UTF-8");
    }

    #[test]
    fn every_truncation_of_a_connect_is_an_error() {
        let p = encode_connect(&sample_connect(), "agent-a", b"secret").unwrap();
        let (h, body) = body_of(&p);
        for n in 0..body.len() {
            assert!(parse_connect(h.flags, &body[..n]).is_err(), "{n} bytes");
        }
        for n in 0..p.len() {
            let _ = fixed_header(&p[..n], MAX_REMAINING);
        }
    }

    #[test]
    fn publish_topics() {
        let mut b = vec![0, 5];
        b.extend(b"a/b/c");
        b.extend(b"payload");
        assert_eq!(publish_topic(0x02, &b), Ok("a/b/c"));
        assert_eq!(publish_topic(0x00, &b[..7]), Ok("a/b/c"));
        assert!(publish_topic(0x06, &b).is_err(), "QoS 3");
        assert!(publish_topic(0, &b[..6]).is_err(), "truncated");
        assert!(publish_topic(0, &[0, 0]).is_err(), "empty");
        assert!(publish_topic(0, &[0, 3, b'a', b'/', b'+']).is_err());
        assert!(publish_topic(0, &[0, 1, b'#']).is_err());
        assert!(publish_topic(0, &[0, 1, 0xff]).is_err());
        assert!(publish_topic(0, &[]).is_err());
    }

    #[test]
    fn subscribes_and_subacks() {
        let mut b = vec![0, 7];
        b.extend([0, 3]);
        b.extend(b"a/#");
        b.push(1);
        b.extend([0, 1]);
        b.extend(b"x");
        b.push(0);
        let s = parse_subscribe(0x02, &b).unwrap();
        assert_eq!(s.pkid, 7);
        assert_eq!(s.filters, vec![("a/#", 1), ("x", 0)]);
        assert!(parse_subscribe(0x00, &b).is_err(), "flags");
        assert!(parse_subscribe(0x02, &b[..2]).is_err(), "no filter");
        assert!(parse_subscribe(0x02, &b[..b.len() - 1]).is_err(), "no QoS");
        let mut q3 = b.clone();
        let last = q3.len() - 1;
        q3[last] = 3;
        assert!(parse_subscribe(0x02, &q3).is_err(), "QoS 3");
        assert!(
            parse_subscribe(0x02, &[0, 0, 0, 1, b'x', 0]).is_err(),
            "pkid 0"
        );
        assert_eq!(
            suback(7, &[0x80, 0x80]).unwrap(),
            vec![0x90, 4, 0, 7, 0x80, 0x80]
        );
        assert_eq!(connack(5), [0x20, 2, 0, 5]);
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let seeds = [
            encode_connect(&sample_connect(), "u", b"p").unwrap(),
            vec![0x82, 8, 0, 1, 0, 3, b'a', b'/', b'b', 1],
            vec![0x32, 9, 0, 3, b'a', b'/', b'b', 0, 1, b'x', b'y'],
        ];
        for i in 0..20_000 {
            let n = (rng.next() % 64) as usize;
            let mut input = if i % 2 == 0 {
                rng.bytes(n)
            } else {
                // Mutate a valid packet.
                let mut p = seeds[i % seeds.len()].clone();
                for _ in 0..=(rng.next() % 4) {
                    let at = (rng.next() as usize) % p.len();
                    p[at] = rng.next() as u8;
                }
                p.truncate((rng.next() as usize) % (p.len() + 1));
                p
            };
            let _ = fixed_header(&input, MAX_REMAINING);
            let flags = input.first().copied().unwrap_or(0) & 0x0f;
            if !input.is_empty() {
                input.remove(0);
            }
            let _ = parse_connect(flags, &input);
            let _ = parse_connect(0, &input);
            let _ = publish_topic(flags, &input);
            let _ = parse_subscribe(0x02, &input);
            let _ = parse_subscribe(flags, &input);
        }
    }

    #[test]
    fn acl() {
        let p = "shopfloor/v1";
        let a = Role::Agent("agent-a".into());
        let r = Role::Reader("ops".into());
        assert!(may_publish(p, &a, "shopfloor/v1/agent-a/batch"));
        assert!(may_publish(p, &a, "shopfloor/v1/agent-a/status"));
        for t in [
            "shopfloor/v1/agent-b/batch",
            "shopfloor/v1/agent-a/batch/x",
            "shopfloor/v1/agent-a/other",
            "shopfloor/v1/agent-ab/batch",
            "shopfloor/v1/agent-a",
            "shopfloor/v2/agent-a/batch",
            "other/shopfloor/v1/agent-a/batch",
        ] {
            assert!(!may_publish(p, &a, t), "{t}");
        }
        assert!(may_will(p, &a, "shopfloor/v1/agent-a/status"));
        assert!(!may_will(p, &a, "shopfloor/v1/agent-a/batch"));
        assert!(!may_will(p, &r, "shopfloor/v1/ops/status"));
        assert!(!may_publish(p, &r, "shopfloor/v1/ops/batch"));
        assert!(!may_subscribe(p, &a, "shopfloor/v1/agent-a/batch"));
        for f in [
            "shopfloor/v1/#",
            "shopfloor/v1/+/batch",
            "shopfloor/v1/agent-a/status",
        ] {
            assert!(may_subscribe(p, &r, f), "{f}");
        }
        for f in [
            "#",
            "+/v1/#",
            "shopfloor/#",
            "shopfloor/v1x/#",
            "$share/g/shopfloor/v1/+/batch",
            "$share//shopfloor/v1/#",
            "$share/g+/shopfloor/v1/#",
            "$share/g",
            "$SYS/#",
        ] {
            assert!(!may_subscribe(p, &r, f), "{f}");
        }
        assert!(may_publish(p, &Role::Anonymous, "anything"));
        assert!(may_subscribe(p, &Role::Anonymous, "#"));
        assert!(!may_subscribe(p, &Role::Anonymous, "$share/g/#"));
    }

    #[test]
    fn identities() {
        assert!(check_identity("agent-a").is_ok());
        assert!(check_identity("line1.agent_2").is_ok());
        for bad in [
            "",
            "a/b",
            "a+",
            "a#",
            "a:b",
            "a b",
            "a\n",
            "shopfloor-gateway-gw1",
        ] {
            assert!(check_identity(bad).is_err(), "{bad:?}");
        }
        assert!(check_identity(&"x".repeat(129)).is_err());
    }

    #[test]
    fn users_files() {
        let h = cheap_hash("pw");
        let text = format!("# users\n\nagent-a:{h}\n  agent-b:{h}  \n");
        let u = parse_users(&text).unwrap();
        assert_eq!(u.len(), 2);
        assert!(verify_password(&u["agent-a"], b"pw"));
        assert!(!verify_password(&u["agent-a"], b"pW"));
        for (bad, what) in [
            (format!("agent-a:{h}\nagent-a:{h}\n"), "line 2: user \"agent-a\" is listed twice"),
            ("agent-a\n".to_owned(), "line 1: expected"),
            ("agent-a:plain\n".to_owned(), "line 1: user \"agent-a\": not a PHC"),
            (
                "agent-a:$argon2i$v=19$m=64,t=1,p=1$MDEyMzQ1Njc4OWFiY2RlZg$aGFzaGhhc2hoYXNoaGFzaA\n".to_owned(),
                "argon2i (expected argon2id)",
            ),
            (format!("a/b:{h}\n"), "line 1: user \"a/b\""),
        ] {
            let e = parse_users(&bad).unwrap_err();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn users_file_permissions_and_reload() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, format!("agent-a:{}\n", cheap_hash("one"))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = load_users(&path).unwrap_err();
        assert!(
            e.contains("accessible by group or others (mode 0640)"),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let db = UserDb::open(&path).unwrap();
        assert!(db.lookup("agent-a").is_some());
        assert!(db.lookup("agent-b").is_none());
        // A new version is picked up; a broken one is ignored.
        std::fs::write(
            &path,
            format!(
                "agent-a:{}\nagent-b:{}\n# grown\n",
                cheap_hash("one"),
                cheap_hash("two")
            ),
        )
        .unwrap();
        assert!(db.lookup("agent-b").is_some());
        std::fs::write(&path, "broken line that is rather longer than before\n").unwrap();
        assert!(db.lookup("agent-b").is_some());
    }

    #[test]
    fn brake_blocks_after_repeated_failures_and_forgets() {
        let mut b = Brake::default();
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let other: IpAddr = "10.0.0.10".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..BRAKE_FAILURES - 1 {
            assert!(!b.failure(ip, t0 + Duration::from_secs(u64::from(i))));
        }
        assert!(!b.blocked(ip, t0 + Duration::from_secs(10)));
        assert!(b.failure(ip, t0 + Duration::from_secs(10)));
        assert!(b.blocked(ip, t0 + Duration::from_secs(11)));
        assert!(!b.blocked(other, t0 + Duration::from_secs(11)));
        assert!(!b.blocked(ip, t0 + Duration::from_secs(10) + BRAKE_BLOCK));
        // Failures spread wider than the window never block.
        let mut b = Brake::default();
        for i in 0..20u64 {
            assert!(!b.failure(ip, t0 + BRAKE_WINDOW / 2 * (i as u32)));
        }
        // Memory is bounded.
        let mut b = Brake::default();
        for i in 0..(BRAKE_ADDRESSES as u32 + 10) {
            b.failure(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert!(b.entries.len() <= BRAKE_ADDRESSES);
    }
}
