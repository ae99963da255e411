//! One connection attempt: client with its certificate store, endpoint discovery and
//! selection, session creation and activation. The session's event loop runs on its own task
//! and reports through a channel, so service calls never wait for the caller to poll it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use opcua::client::{Client, ClientBuilder, IdentityToken, Session, SessionPollResult};
use opcua::crypto::{CertificateStore, KeySize, PrivateKey, SecurityPolicy, X509};
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode, UserTokenType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{Identity, Mode, OpcuaConfig, OpcuaError, Policy};

/// Reconnect attempts the library makes on its own after a lost connection before the session
/// gives up and the caller rebuilds everything (new discovery, new certificate check).
pub(crate) const LIBRARY_RETRIES: i32 = 4;

/// A connected session and the events of its event loop.
pub(crate) struct Connection {
    pub(crate) session: Arc<Session>,
    pub(crate) events: mpsc::UnboundedReceiver<Result<SessionPollResult, StatusCode>>,
    driver: JoinHandle<()>,
    /// What was negotiated, for link events: `opc.tcp://… (Basic256Sha256/SignAndEncrypt)`.
    pub(crate) description: String,
}

impl Connection {
    /// Closes the session politely (bounded by `timeout`), then stops the event loop.
    pub(crate) async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.session.disconnect()).await;
        self.driver.abort();
        let _ = self.driver.await;
    }

    /// Stops the event loop without talking to the server (the connection is already gone).
    pub(crate) fn abandon(self) {
        self.driver.abort();
    }
}

fn to_policy(p: Policy) -> SecurityPolicy {
    match p {
        Policy::None => SecurityPolicy::None,
        Policy::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
    }
}

fn to_mode(m: Mode) -> MessageSecurityMode {
    match m {
        Mode::None => MessageSecurityMode::None,
        Mode::Sign => MessageSecurityMode::Sign,
        Mode::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    }
}

fn token_type(i: &Identity) -> UserTokenType {
    match i {
        Identity::Anonymous => UserTokenType::Anonymous,
        Identity::UserName { .. } => UserTokenType::UserName,
        Identity::Certificate { .. } => UserTokenType::Certificate,
    }
}

/// Builds the client. Creating the application certificate (first run) is seconds of RSA
/// work, so it runs on the blocking pool.
async fn build_client(cfg: &OpcuaConfig, session_name: &str) -> Result<Client, OpcuaError> {
    let pki = cfg.pki_dir.clone();
    let pki_text = pki.display().to_string();
    let builder = ClientBuilder::new()
        .application_name("Shopfloor agent")
        .application_uri("urn:shopfloor:agent")
        .product_uri("urn:shopfloor:agent")
        .session_name(session_name)
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(cfg.trust_server_certs)
        .request_timeout(cfg.request_timeout)
        // A publish request waits on the server until data or a keep-alive is due.
        .publish_timeout(cfg.keep_alive_interval * 2 + cfg.request_timeout)
        .keep_alive_interval(cfg.keep_alive_interval)
        .max_failed_keep_alive_count(3)
        .session_retry_initial(cfg.backoff_initial)
        .session_retry_max(cfg.backoff_max)
        .session_retry_limit(LIBRARY_RETRIES)
        .recreate_subscriptions(true)
        .min_publish_interval(Duration::from_millis(50));
    let built = tokio::task::spawn_blocking(move || builder.client())
        .await
        .map_err(|e| OpcuaError::Pki {
            pki_dir: pki_text.clone(),
            reason: e.to_string(),
        })?;
    let client = built.map_err(|errs| OpcuaError::Pki {
        pki_dir: pki_text.clone(),
        reason: errs.join("; "),
    })?;
    // Without its own certificate the client can still use policy None, so only a secure
    // configuration makes a missing key fatal (the store logs why it could not create one).
    if cfg.security_policy != Policy::None {
        let store = client.certificate_store().read();
        if store.read_own_cert().is_err() || store.read_own_pkey().is_err() {
            return Err(OpcuaError::Pki {
                pki_dir: pki_text,
                reason: "no application certificate or private key (own/cert.der, private/private.pem) and none could be created".into(),
            });
        }
    }
    Ok(client)
}

/// Creates the agent's application certificate in `cfg.pki_dir` if it is missing. Run once
/// before starting several devices that share the directory, so they do not race to create
/// it (the losers would start without a certificate).
pub async fn prepare_certificate(cfg: &OpcuaConfig) -> Result<(), OpcuaError> {
    build_client(cfg, "shopfloor-agent").await.map(drop)
}

fn identity_token(i: &Identity) -> Result<IdentityToken, OpcuaError> {
    Ok(match i {
        Identity::Anonymous => IdentityToken::Anonymous,
        Identity::UserName { user, password } => {
            IdentityToken::new_user_name(user.clone(), password.clone())
        }
        Identity::Certificate { cert, key } => {
            let fail = |reason: String| {
                OpcuaError::Identity(format!("{} / {}: {reason}", cert.display(), key.display()))
            };
            let x509 = CertificateStore::read_cert(cert).map_err(fail)?;
            let pkey = CertificateStore::read_pkey(key).map_err(fail)?;
            // The server would fail the token signature with BadSecurityChecksFailed, which
            // reads like a problem with the application certificates: say what it is instead.
            if !key_belongs_to(&x509, &pkey) {
                return Err(fail(
                    "the private key does not belong to the certificate".into(),
                ));
            }
            IdentityToken::new_x509(x509, pkey)
        }
    })
}

/// Whether `key` is the private key of `cert`: a probe signed with it verifies with the
/// certificate's public key.
fn key_belongs_to(cert: &X509, key: &PrivateKey) -> bool {
    const PROBE: &[u8] = b"shopfloor user certificate check";
    let mut signature = vec![0u8; key.size()];
    key.sign_sha256(PROBE, &mut signature).is_ok()
        && cert
            .public_key()
            .is_ok_and(|public| public.verify_sha256(PROBE, &signature).unwrap_or(false))
}

fn describe(e: &EndpointDescription) -> String {
    // The policy name is the URI fragment; `SecurityPolicy::to_str` panics on unknown ones.
    let uri = e.security_policy_uri.as_ref();
    let policy = uri.rsplit('#').next().unwrap_or(uri);
    let tokens: Vec<&str> = e
        .user_identity_tokens
        .iter()
        .flatten()
        .map(|t| match t.token_type {
            UserTokenType::Anonymous => "anonymous",
            UserTokenType::UserName => "user name",
            UserTokenType::Certificate => "certificate",
            UserTokenType::IssuedToken => "issued token",
        })
        .collect();
    format!("{policy}/{} ({})", e.security_mode, tokens.join(", "))
}

/// Picks the server endpoint matching the configured policy, mode and identity kind.
pub(crate) fn select_endpoint(
    cfg: &OpcuaConfig,
    offered: &[EndpointDescription],
) -> Result<EndpointDescription, OpcuaError> {
    let (policy, mode, token) = (
        to_policy(cfg.security_policy),
        to_mode(cfg.security_mode),
        token_type(&cfg.identity),
    );
    let chosen = offered.iter().find(|e| {
        e.security_mode == mode
            && SecurityPolicy::from_uri(e.security_policy_uri.as_ref()) == policy
            && e.user_identity_tokens
                .iter()
                .flatten()
                .any(|t| t.token_type == token)
    });
    let Some(chosen) = chosen else {
        let mut list: Vec<String> = offered.iter().map(describe).collect();
        list.dedup();
        return Err(OpcuaError::NoMatchingEndpoint {
            endpoint: cfg.endpoint.clone(),
            wanted: format!(
                "{}/{} with {} login",
                cfg.security_policy,
                cfg.security_mode,
                cfg.identity.kind()
            ),
            offered: if list.is_empty() {
                "nothing".into()
            } else {
                list.join("; ")
            },
        });
    };
    let mut e = chosen.clone();
    e.endpoint_url = cfg.endpoint.as_str().into();
    Ok(e)
}

/// What a status code usually means at commissioning time.
pub(crate) fn hint(status: StatusCode, cfg: &OpcuaConfig) -> String {
    let pki = cfg.pki_dir.display();
    if status == StatusCode::BadUserAccessDenied || status == StatusCode::BadIdentityTokenRejected {
        match cfg.identity {
            Identity::Anonymous => " (the server does not accept anonymous logins)".into(),
            Identity::UserName { .. } => " (user name or password rejected by the server)".into(),
            Identity::Certificate { .. } => " (user certificate rejected by the server)".into(),
        }
    } else if status == StatusCode::BadIdentityTokenInvalid {
        " (the server does not accept this kind of login)".into()
    } else if status == StatusCode::BadCertificateUntrusted {
        format!(
            " (the server certificate is not trusted: move it from {pki}/rejected to {pki}/trusted, or set trust_server_certs)"
        )
    } else if status == StatusCode::BadSecurityChecksFailed
        || status == StatusCode::BadCertificateInvalid
    {
        format!(
            " (certificate check failed: the server must trust the agent certificate {pki}/own/cert.der, and the agent the server's)"
        )
    } else if status == StatusCode::BadCertificateHostNameInvalid {
        " (the server certificate does not name the host in the endpoint URL)".into()
    } else if status == StatusCode::BadTooManySessions {
        " (the server has no free session)".into()
    } else {
        String::new()
    }
}

/// Discovers endpoints, creates and activates a session. Fails fast: the first failed
/// activation is returned as an error (the caller owns the retry policy for first connects).
pub(crate) async fn connect(
    cfg: &OpcuaConfig,
    session_name: &str,
) -> Result<Connection, OpcuaError> {
    cfg.validate()?;
    let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
    let timeout = || OpcuaError::Timeout {
        endpoint: cfg.endpoint.clone(),
        after: cfg.connect_timeout,
    };
    let identity = identity_token(&cfg.identity)?;
    let mut client = build_client(cfg, session_name).await?;

    let offered = tokio::time::timeout_at(
        deadline,
        client.get_server_endpoints_from_url(cfg.endpoint.as_str()),
    )
    .await
    .map_err(|_| timeout())?
    .map_err(|e| OpcuaError::Unreachable {
        endpoint: cfg.endpoint.clone(),
        reason: e.to_string(),
    })?;
    let endpoint = select_endpoint(cfg, &offered)?;
    let description = format!(
        "{} ({}/{})",
        cfg.endpoint, cfg.security_policy, cfg.security_mode
    );

    let (session, event_loop) = client
        .connect_to_endpoint_directly(endpoint, identity)
        .map_err(|e| OpcuaError::Connect {
            endpoint: cfg.endpoint.clone(),
            status: e.to_string(),
            hint: String::new(),
        })?;
    let (ev_tx, mut events) = mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let stream = event_loop.enter();
        tokio::pin!(stream);
        while let Some(item) = stream.next().await {
            let end = item.is_err();
            if ev_tx.send(item).is_err() || end {
                break;
            }
        }
    });

    // The first outcome of the event loop decides: connected, or why not.
    let first = tokio::time::timeout_at(deadline, async {
        loop {
            match events.recv().await {
                Some(Ok(SessionPollResult::Reconnected(_))) => return Ok(()),
                Some(Ok(SessionPollResult::ReconnectFailed(status))) | Some(Err(status)) => {
                    return Err(status);
                }
                Some(Ok(_)) => {}
                None => return Err(StatusCode::BadConnectionClosed),
            }
        }
    })
    .await;
    match first {
        Ok(Ok(())) => Ok(Connection {
            session,
            events,
            driver,
            description,
        }),
        Ok(Err(status)) => {
            driver.abort();
            Err(OpcuaError::Connect {
                endpoint: cfg.endpoint.clone(),
                status: status.to_string(),
                hint: hint(status, cfg),
            })
        }
        Err(_) => {
            driver.abort();
            Err(timeout())
        }
    }
}
