//! Gateway configuration (`shopfloor-gateway run --config FILE`, docs/GATEWAY.md). Parsed and
//! validated completely before anything binds or connects; every error names the file, the
//! field path and the reason. Unknown fields are rejected.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Default MQTT topic prefix (DESIGN.md §4).
pub const DEFAULT_TOPIC_PREFIX: &str = "shopfloor/v1";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub gateway: GatewaySection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub registry: RegistrySection,
    #[serde(default)]
    pub retention: RetentionSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub seal: SealSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Replica id: 1–64 of `a-z 0-9 _ -`. Each replica of one deployment needs its own (MQTT
    /// client id `shopfloor-gateway-<id>`, roll-up lease holder).
    pub id: String,
    /// Where the SQLite database, the embedded broker's state and logs live. Relative paths
    /// are relative to the configuration file.
    pub data_dir: PathBuf,
    /// IANA time zone of day and month roll-ups and of API dates without an offset.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
}

fn default_time_zone() -> String {
    "Asia/Shanghai".into()
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite://PATH` or `postgres://…`. Default: `sqlite://<data_dir>/gateway.db`.
    #[serde(default)]
    pub url: Option<String>,
    /// Connection pool size (PostgreSQL; SQLite uses one writer and a few readers).
    #[serde(default)]
    pub max_connections: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// Run the embedded broker (rumqttd, MQTT 3.1.1) on `listen` and consume from it.
    #[serde(default = "yes")]
    pub embedded: bool,
    /// Embedded broker's listen address.
    #[serde(default = "default_mqtt_listen")]
    pub listen: SocketAddr,
    /// External broker: `mqtt://host:port` or `mqtts://host:port` (then `embedded = false`).
    #[serde(default)]
    pub url: Option<String>,
    /// Topic prefix; batches arrive on `<prefix>/<agent>/batch`.
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Shared-subscription group: replicas in one group split the batches
    /// (`$share/<group>/<prefix>/+/batch`). Empty (the default): a plain subscription, which
    /// a broker keeps in the gateway's persistent session across its own restarts. Mosquitto
    /// does not restore shared subscriptions after a restart: batches published before the
    /// gateway subscribes again are acknowledged to the agents and reach nobody (measured by
    /// the fault suite, docs/BENCHMARKS.md).
    #[serde(default = "default_group")]
    pub shared_group: String,
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the password (never the password itself in the configuration).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify an `mqtts://` broker; default: none accepted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for brokers that require them.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// `[mqtt.tls]`: TLS on the embedded broker's listener (`crate::guard`).
    #[serde(default)]
    pub tls: Option<GuardTls>,
    /// `[mqtt.auth]`: who may connect to the embedded broker (`crate::guard`).
    #[serde(default)]
    pub auth: Option<GuardAuth>,
}

/// `[mqtt.tls]` of the embedded broker: with it, its listener speaks TLS only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardTls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA certificate(s) (PEM) of client certificates: set, every client must present a
    /// certificate it signed, and the certificate's subject CN is the client's identity.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[mqtt.auth]` of the embedded broker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardAuth {
    /// `name:$argon2id$…` lines (`shopfloor-gateway mqtt-user add`); mode 0600.
    #[serde(default)]
    pub users_file: Option<PathBuf>,
    /// Default: true only when neither `users_file` nor `mqtt.tls.client_ca` is set.
    #[serde(default)]
    pub allow_anonymous: Option<bool>,
    /// Identities that may subscribe under the topic prefix and publish nothing.
    #[serde(default)]
    pub readers: Vec<String>,
}

impl MqttSection {
    /// Whether the embedded broker accepts clients without credentials.
    pub fn allow_anonymous(&self) -> bool {
        let auth = self.auth.as_ref();
        auth.and_then(|a| a.allow_anonymous).unwrap_or_else(|| {
            auth.and_then(|a| a.users_file.as_ref()).is_none()
                && self
                    .tls
                    .as_ref()
                    .and_then(|t| t.client_ca.as_ref())
                    .is_none()
        })
    }
}

fn yes() -> bool {
    true
}
fn default_mqtt_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_prefix() -> String {
    DEFAULT_TOPIC_PREFIX.into()
}
fn default_group() -> String {
    String::new()
}
fn default_keep_alive() -> u64 {
    30
}

impl Default for MqttSection {
    fn default() -> Self {
        MqttSection {
            embedded: true,
            listen: default_mqtt_listen(),
            url: None,
            topic_prefix: default_prefix(),
            shared_group: default_group(),
            username: None,
            password_file: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            keep_alive_s: default_keep_alive(),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// API, dashboard and /metrics.
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// Largest accepted request body (bytes); larger gets 413.
    #[serde(default = "default_body_limit")]
    pub max_body_bytes: usize,
    /// Mark the dashboard's session cookie `Secure` (sent over HTTPS only). Set it when the
    /// dashboard is served over HTTPS through a reverse proxy.
    #[serde(default)]
    pub secure_cookies: bool,
    /// A dashboard session ends after this long without a request (seconds).
    #[serde(default = "default_session_idle")]
    pub session_idle_s: u64,
    /// A dashboard session ends this long after sign-in, whatever happens (seconds).
    #[serde(default = "default_session_max")]
    pub session_max_s: u64,
    /// Reverse proxies (addresses or networks `a.b.c.d/n`) whose `X-Forwarded-For` and
    /// `X-Forwarded-Host` are believed; empty: the socket's peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// Default idle timeout of a dashboard session: 30 minutes (a wall display's live refresh
/// keeps it active).
pub const DEFAULT_SESSION_IDLE_S: u64 = 30 * 60;
/// Default absolute lifetime of a dashboard session: 12 hours (one long shift).
pub const DEFAULT_SESSION_MAX_S: u64 = 12 * 3600;

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_body_limit() -> usize {
    4 << 20
}
fn default_session_idle() -> u64 {
    DEFAULT_SESSION_IDLE_S
}
fn default_session_max() -> u64 {
    DEFAULT_SESSION_MAX_S
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: default_http_listen(),
            max_body_bytes: default_body_limit(),
            secure_cookies: false,
            session_idle_s: DEFAULT_SESSION_IDLE_S,
            session_max_s: DEFAULT_SESSION_MAX_S,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RegistrySection {
    /// Directory with `entities.toml`, `agents.toml`, `products.toml` (docs/GATEWAY.md), loaded
    /// at start; items in the files replace stored ones of the same id (audited as actor
    /// `file:<path>`), items only in the database (added through the API) are kept.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Plan targets (`configs/targets.toml` format).
    #[serde(default)]
    pub targets: Option<PathBuf>,
}

/// Retention in days per table; 0 keeps forever.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSection {
    #[serde(default)]
    pub raw_batches_days: u32,
    #[serde(default = "d90")]
    pub samples_days: u32,
    #[serde(default)]
    pub states_days: u32,
    #[serde(default)]
    pub readings_days: u32,
    #[serde(default = "d365")]
    pub links_days: u32,
    #[serde(default = "d90")]
    pub quarantine_days: u32,
    #[serde(default = "d35")]
    pub minute_rollups_days: u32,
    #[serde(default)]
    pub hour_rollups_days: u32,
}

fn d35() -> u32 {
    35
}
fn d90() -> u32 {
    90
}
fn d365() -> u32 {
    365
}

impl Default for RetentionSection {
    fn default() -> Self {
        RetentionSection {
            raw_batches_days: 0,
            samples_days: 90,
            states_days: 0,
            readings_days: 0,
            links_days: 365,
            quarantine_days: 90,
            minute_rollups_days: 35,
            hour_rollups_days: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Indicator gauges are exported for park, enterprise and workshop entities, at most this
    /// many entities (bounded cardinality; docs/GATEWAY.md lists the ids).
    #[serde(default = "default_max_entities")]
    pub indicator_entities_max: usize,
    /// How often the indicator gauges are recomputed (seconds).
    #[serde(default = "default_refresh")]
    pub indicator_refresh_s: u64,
}

fn default_max_entities() -> usize {
    200
}
fn default_refresh() -> u64 {
    60
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            indicator_entities_max: default_max_entities(),
            indicator_refresh_s: default_refresh(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSection {
    /// At most this many batches per database transaction.
    #[serde(default = "default_batch_max")]
    pub max_batches_per_commit: usize,
    /// How long to wait for more batches before committing (ms).
    #[serde(default = "default_batch_wait")]
    pub commit_wait_ms: u64,
    /// Largest accepted payload (bytes); larger is quarantined as `too_large`.
    #[serde(default = "default_max_payload")]
    pub max_payload_bytes: usize,
    /// A batch sealed further than this in the future of the gateway's clock is quarantined
    /// (`clock_skew`).
    #[serde(default = "default_max_future")]
    pub max_future_s: u64,
    /// Groups being committed at once (each on its own connection), for agents that are not
    /// in an earlier group still being committed; acknowledgements still go out in arrival
    /// order. Unset: 2 on PostgreSQL, 1 on SQLite (one writer: a second group in flight only
    /// makes the groups smaller).
    #[serde(default)]
    pub commits_in_flight: Option<usize>,
}

fn default_batch_max() -> usize {
    256
}
fn default_batch_wait() -> u64 {
    20
}
fn default_max_payload() -> usize {
    16 << 20
}
fn default_max_future() -> u64 {
    300
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            max_batches_per_commit: default_batch_max(),
            commit_wait_ms: default_batch_wait(),
            max_payload_bytes: default_max_payload(),
            max_future_s: default_max_future(),
            commits_in_flight: None,
        }
    }
}

/// `[seal]`: sealing closed days (docs/GATEWAY.md, "Seals and verify").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealSection {
    /// Seal closed days (only the holder of the roll-up lease seals).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How long after a local day's end it is sealed (seconds): late batches of the agents'
    /// outboxes mostly arrive by then (later ones make a new version of the seal).
    #[serde(default = "default_seal_after")]
    pub after_s: u64,
    /// Public keys (`ed25519:<base64>`) of other gateway replicas whose seals `verify` accepts;
    /// this gateway's own key (`<data_dir>/gateway.key`) is always trusted.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

fn default_seal_after() -> u64 {
    3600
}

impl Default for SealSection {
    fn default() -> Self {
        SealSection {
            enabled: true,
            after_s: default_seal_after(),
            trusted_keys: Vec::new(),
        }
    }
}

/// A configuration error: `file: path: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub path: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.reason)
        }
    }
}

/// Reads and validates a configuration file; relative paths become relative to its directory.
pub fn load(path: &Path) -> Result<GatewayConfig, Vec<ConfigError>> {
    let file = path.display().to_string();
    let err = |p: &str, r: String| ConfigError {
        file: file.clone(),
        path: p.into(),
        reason: r,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![err("", format!("cannot read: {e}"))])?;
    let de = toml::de::Deserializer::parse(&text).map_err(|e| vec![err("", e.to_string())])?;
    let mut cfg: GatewayConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        vec![err(&path, e.into_inner().message().to_owned())]
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    resolve_paths(&mut cfg, base);
    let mut errors = validate(&cfg, &file);
    if errors.is_empty() {
        // The embedded broker's TLS and users files: readable and well-formed.
        errors.extend(
            crate::guard::check_config(&cfg)
                .into_iter()
                .map(|(p, r)| err(&p, r)),
        );
    }
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

fn resolve_paths(cfg: &mut GatewayConfig, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    fix(&mut cfg.gateway.data_dir);
    for p in [
        &mut cfg.mqtt.password_file,
        &mut cfg.mqtt.ca_file,
        &mut cfg.mqtt.client_cert,
        &mut cfg.mqtt.client_key,
        &mut cfg.registry.dir,
        &mut cfg.registry.targets,
    ]
    .into_iter()
    .flatten()
    {
        fix(p);
    }
    if let Some(t) = &mut cfg.mqtt.tls {
        fix(&mut t.cert);
        fix(&mut t.key);
        if let Some(ca) = &mut t.client_ca {
            fix(ca);
        }
    }
    if let Some(f) = cfg.mqtt.auth.as_mut().and_then(|a| a.users_file.as_mut()) {
        fix(f);
    }
}

/// Checks what serde cannot: ids, zones, URLs, combinations.
pub fn validate(cfg: &GatewayConfig, file: &str) -> Vec<ConfigError> {
    let mut out = Vec::new();
    let mut bad = |p: &str, r: &str| {
        out.push(ConfigError {
            file: file.into(),
            path: p.into(),
            reason: r.into(),
        });
    };
    let id = &cfg.gateway.id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        bad("gateway.id", "must be 1–64 characters of a-z, 0-9, _ and -");
    }
    if jiff::tz::TimeZone::get(&cfg.gateway.time_zone).is_err() {
        bad(
            "gateway.time_zone",
            "not an IANA time zone name (e.g. Asia/Shanghai)",
        );
    }
    if let Some(url) = &cfg.store.url
        && !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
    {
        bad(
            "store.url",
            "must start with sqlite:, postgres:// or postgresql://",
        );
    }
    if cfg.store.max_connections == Some(0) {
        bad("store.max_connections", "must be at least 1");
    }
    match (&cfg.mqtt.url, cfg.mqtt.embedded) {
        (Some(_), true) => bad(
            "mqtt.url",
            "set `mqtt.embedded = false` to use an external broker",
        ),
        (None, false) => bad("mqtt.url", "required when `mqtt.embedded = false`"),
        (Some(u), false) if !(u.starts_with("mqtt://") || u.starts_with("mqtts://")) => {
            bad("mqtt.url", "must start with mqtt:// or mqtts://")
        }
        _ => {}
    }
    let prefix = &cfg.mqtt.topic_prefix;
    if prefix.is_empty()
        || prefix.contains(['+', '#'])
        || prefix.starts_with('/')
        || prefix.ends_with('/')
    {
        bad(
            "mqtt.topic_prefix",
            "must be a non-empty topic without wildcards or leading/trailing '/'",
        );
    }
    if cfg.mqtt.shared_group.contains(['/', '+', '#']) {
        bad("mqtt.shared_group", "must not contain '/', '+' or '#'");
    }
    if cfg.mqtt.client_cert.is_some() != cfg.mqtt.client_key.is_some() {
        bad("mqtt.client_key", "client_cert and client_key go together");
    }
    if cfg.mqtt.keep_alive_s < 5 {
        bad("mqtt.keep_alive_s", "must be at least 5");
    }
    validate_guard(&cfg.mqtt, &mut bad);
    if cfg.http.max_body_bytes < 1024 {
        bad("http.max_body_bytes", "must be at least 1024");
    }
    if !(60..=30 * 86_400).contains(&cfg.http.session_idle_s) {
        bad(
            "http.session_idle_s",
            "must be from 60 to 2592000 (30 days)",
        );
    }
    if !(300..=30 * 86_400).contains(&cfg.http.session_max_s) {
        bad(
            "http.session_max_s",
            "must be from 300 to 2592000 (30 days)",
        );
    }
    for (i, p) in cfg.http.trusted_proxies.iter().enumerate() {
        if let Err(r) = crate::session::Cidr::parse(p) {
            bad(&format!("http.trusted_proxies[{i}]"), &r);
        }
    }
    if cfg.ingest.max_batches_per_commit == 0 {
        bad("ingest.max_batches_per_commit", "must be at least 1");
    }
    if cfg
        .ingest
        .commits_in_flight
        .is_some_and(|n| !(1..=8).contains(&n))
    {
        bad("ingest.commits_in_flight", "must be between 1 and 8");
    }
    if cfg.ingest.max_payload_bytes < 1024 {
        bad("ingest.max_payload_bytes", "must be at least 1024");
    }
    if cfg.metrics.indicator_refresh_s == 0 {
        bad("metrics.indicator_refresh_s", "must be at least 1");
    }
    if cfg.seal.after_s > 30 * 86_400 {
        bad("seal.after_s", "must be at most 2592000 (30 days)");
    }
    for (i, k) in cfg.seal.trusted_keys.iter().enumerate() {
        if let Err(e) = shopfloor_core::batch::parse_public_key(k) {
            bad(&format!("seal.trusted_keys[{i}]"), &e.to_string());
        }
    }
    out
}

/// `[mqtt.tls]` and `[mqtt.auth]` of the embedded broker (docs/GATEWAY.md, "MQTT security").
fn validate_guard(m: &MqttSection, bad: &mut impl FnMut(&str, &str)) {
    if !m.embedded {
        if m.tls.is_some() {
            bad(
                "mqtt.tls",
                "only for the embedded broker (mqtt.embedded = true); an external broker is \
                 secured in its own configuration (deploy/mosquitto/), the gateway's connection \
                 to it with mqtt.ca_file, mqtt.client_cert and mqtt.client_key",
            );
        }
        if m.auth.is_some() {
            bad(
                "mqtt.auth",
                "only for the embedded broker (mqtt.embedded = true); an external broker has \
                 its own users and ACL (deploy/mosquitto/)",
            );
        }
        return;
    }
    let client_ca = m.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let Some(auth) = &m.auth else { return };
    if auth.users_file.is_some() && client_ca {
        bad(
            "mqtt.auth.users_file",
            "not used with mqtt.tls.client_ca (the client certificate's CN is the identity); \
             remove one of them",
        );
    }
    match auth.allow_anonymous {
        Some(true) if client_ca => bad(
            "mqtt.auth.allow_anonymous",
            "cannot be true with mqtt.tls.client_ca (every client presents a certificate)",
        ),
        Some(false) if auth.users_file.is_none() && !client_ca => bad(
            "mqtt.auth.allow_anonymous",
            "false, but there is no way to log in: set mqtt.auth.users_file or \
             mqtt.tls.client_ca",
        ),
        _ => {}
    }
    if !auth.readers.is_empty() && auth.users_file.is_none() && !client_ca {
        bad(
            "mqtt.auth.readers",
            "readers need identities: set mqtt.auth.users_file or mqtt.tls.client_ca",
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, r) in auth.readers.iter().enumerate() {
        if let Err(e) = crate::guard::check_identity(r) {
            bad(&format!("mqtt.auth.readers[{i}]"), &format!("{r:?}: {e}"));
        } else if !seen.insert(r) {
            bad(
                &format!("mqtt.auth.readers[{i}]"),
                &format!("{r:?} is listed twice"),
            );
        }
    }
}

impl GatewayConfig {
    /// The store URL, defaulting to SQLite under the data directory.
    pub fn store_url(&self) -> String {
        self.store.url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.gateway.data_dir.join("gateway.db").display()
            )
        })
    }
}
