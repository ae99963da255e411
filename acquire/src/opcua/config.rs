//! What an OPC UA connection needs: endpoint, security, identity, certificates, timings, and
//! the errors a connection attempt reports.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Security policy of the secure channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    None,
    Basic256Sha256,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::None => "None",
            Policy::Basic256Sha256 => "Basic256Sha256",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Policy::None),
            "basic256sha256" => Ok(Policy::Basic256Sha256),
            _ => Err(format!(
                "unknown security policy `{s}`: expected None or Basic256Sha256"
            )),
        }
    }
}

/// Message security mode of the secure channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    None,
    Sign,
    SignAndEncrypt,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::None => "None",
            Mode::Sign => "Sign",
            Mode::SignAndEncrypt => "SignAndEncrypt",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Mode::None),
            "sign" => Ok(Mode::Sign),
            "signandencrypt" | "sign_and_encrypt" | "sign-and-encrypt" => Ok(Mode::SignAndEncrypt),
            _ => Err(format!(
                "unknown security mode `{s}`: expected None, Sign or SignAndEncrypt"
            )),
        }
    }
}

/// Who the agent logs in as.
#[derive(Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    UserName {
        user: String,
        password: String,
    },
    /// An X.509 user certificate (DER or PEM) and its private key (PEM).
    Certificate {
        cert: PathBuf,
        key: PathBuf,
    },
}

impl Identity {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Identity::Anonymous => "anonymous",
            Identity::UserName { .. } => "user name",
            Identity::Certificate { .. } => "certificate",
        }
    }
}

// Written by hand so that a password never reaches a log line.
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Anonymous => f.write_str("Anonymous"),
            Identity::UserName { user, .. } => f
                .debug_struct("UserName")
                .field("user", user)
                .field("password", &"*****")
                .finish(),
            Identity::Certificate { cert, key } => f
                .debug_struct("Certificate")
                .field("cert", cert)
                .field("key", key)
                .finish(),
        }
    }
}

/// Connection settings of one OPC UA server.
#[derive(Debug, Clone)]
pub struct OpcuaConfig {
    /// `opc.tcp://host:port[/path]`. Always used as given: servers often advertise host names
    /// the agent cannot resolve (containers, NAT), so the advertised URL is not used.
    pub endpoint: String,
    pub security_policy: Policy,
    pub security_mode: Mode,
    pub identity: Identity,
    /// Certificate store: `own/`, `private/`, `trusted/`, `rejected/`. The agent's application
    /// certificate is created here on first use.
    pub pki_dir: PathBuf,
    /// Trust an unknown server certificate on first sight (and store it under `trusted/`).
    /// Off by default: an untrusted server certificate lands in `rejected/` and the operator
    /// moves it to `trusted/`.
    pub trust_server_certs: bool,
    /// Node id of the device's root object, base of relative browse paths (`nsu=` allowed).
    /// `None`: the Objects folder.
    pub root: Option<String>,
    /// Limit for endpoint discovery plus session creation and activation.
    pub connect_timeout: Duration,
    /// Limit for every service call.
    pub request_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// How often the server sends queued changes.
    pub publishing_interval: Duration,
    /// Session keep-alive read interval; three failed keep-alives in a row drop the session, so
    /// a server that stops answering without closing the socket is detected.
    pub keep_alive_interval: Duration,
}

impl OpcuaConfig {
    /// Anonymous, no security, Objects folder as root, and timings suited to a plant network.
    pub fn new(endpoint: impl Into<String>, pki_dir: impl Into<PathBuf>) -> Self {
        OpcuaConfig {
            endpoint: endpoint.into(),
            security_policy: Policy::None,
            security_mode: Mode::None,
            identity: Identity::Anonymous,
            pki_dir: pki_dir.into(),
            trust_server_certs: false,
            root: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            publishing_interval: Duration::from_millis(500),
            keep_alive_interval: Duration::from_secs(10),
        }
    }

    /// Checks the combinations a server would reject anyway, with a clearer message.
    pub fn validate(&self) -> Result<(), OpcuaError> {
        if !self.endpoint.starts_with("opc.tcp://") {
            return Err(OpcuaError::Config(format!(
                "endpoint `{}` must start with opc.tcp:// (only the binary TCP transport is supported)",
                self.endpoint
            )));
        }
        match (self.security_policy, self.security_mode) {
            (Policy::None, Mode::None) => {}
            (Policy::None, m) => {
                return Err(OpcuaError::Config(format!(
                    "security mode {m} needs a security policy such as Basic256Sha256 (policy None allows mode None only)"
                )));
            }
            (p, Mode::None) => {
                return Err(OpcuaError::Config(format!(
                    "security policy {p} needs mode Sign or SignAndEncrypt, not None"
                )));
            }
            _ => {}
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(OpcuaError::Config(format!("{name} must be > 0")));
            }
        }
        Ok(())
    }
}

/// Why a connection, a browse or a service call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpcuaError {
    #[error("OPC UA configuration: {0}")]
    Config(String),
    #[error("cannot set up the OPC UA client certificate store in {pki_dir}: {reason}")]
    Pki { pki_dir: String, reason: String },
    #[error("cannot load the user certificate identity: {0}")]
    Identity(String),
    #[error("cannot reach {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("{endpoint} has no endpoint with security {wanted}; it offers: {offered}")]
    NoMatchingEndpoint {
        endpoint: String,
        wanted: String,
        offered: String,
    },
    #[error("connecting to {endpoint} failed: {status}{hint}")]
    Connect {
        endpoint: String,
        status: String,
        hint: String,
    },
    #[error("no answer from {endpoint} within {after:?}")]
    Timeout { endpoint: String, after: Duration },
    #[error("{service} failed: {status}")]
    Service {
        service: &'static str,
        status: String,
    },
    #[error("start node `{node}`: {reason}")]
    Node { node: String, reason: String },
}
