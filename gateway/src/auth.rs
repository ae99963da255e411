//! Who is calling, and what their role allows. Two kinds of credentials:
//!
//! - **API tokens** for scripts: `sfk_` followed by 32 random bytes in unpadded base64url (from
//!   the OS's randomness); only its SHA-256 (64 lowercase hex) is stored, with a name and a
//!   [`Role`]. Requests carry it as `Authorization: Bearer <token>`.
//! - **Dashboard sessions** of users (password sign-in, [`crate::session`], [`crate::users`]):
//!   the cookie `sf_session`, plus `X-CSRF-Token` on POST, PUT and DELETE.
//!
//! Invariants:
//! - [`authorize_request`] is the one entry point of the API's guard. An `Authorization` header
//!   wins; the session cookie is used only without one (a bearer request carries no ambient
//!   credential, so it needs no CSRF token).
//! - A token is shown exactly once, when created ([`create_token`]); it cannot be read back.
//! - Missing, malformed, unknown and revoked tokens, and ended sessions, are all 401; a
//!   cookie-authenticated unsafe request without the session's CSRF token, or from another
//!   origin, is 403 (`csrf: …`) before its role is looked at; a valid caller whose role lacks
//!   the route's [`Permission`] is 403 naming the roles that have it. The role table
//!   ([`allows`]) is the only place that decides.
//! - Token creation and revocation are audited by the store (`token`, with the hash, never the
//!   token); every write through the API is audited with the [`Principal::actor`]
//!   (`token:<name>` or `user:<name>`).
//! - A lookup is by the hash of a 256-bit random value: a wrong guess learns nothing useful
//!   from timing.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use shopfloor_store::{Store, StoreError, TokenRow};

use crate::db::Db;
use crate::model::Role;

/// Prefix of every token (easy to spot in logs and secret scanners).
pub const TOKEN_PREFIX: &str = "sfk_";
/// Random bytes per token.
const TOKEN_BYTES: usize = 32;
/// Length of a token's text: prefix + 43 base64url characters.
const TOKEN_LEN: usize = 4 + 43;

/// What a route needs. Each route of the API names one (or none: public).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Entities, indicators, series, assessments.
    Read,
    /// Agents and their ingest state (chain heads, gaps, forks).
    Agents,
    /// The quarantine list.
    Quarantine,
    /// Registry documents (entities, agents, products, targets).
    RegistryRead,
    RegistryWrite,
    /// Economic input history.
    InputsRead,
    /// Economic inputs (JSON, CSV, XLSX).
    InputsWrite,
    /// Evidence files.
    Evidence,
    /// The audit log.
    Audit,
    /// Creating, listing and revoking tokens.
    Tokens,
    /// Creating, listing and changing dashboard users.
    Users,
}

impl Permission {
    pub const ALL: [Permission; 11] = [
        Permission::Read,
        Permission::Agents,
        Permission::Quarantine,
        Permission::RegistryRead,
        Permission::RegistryWrite,
        Permission::InputsRead,
        Permission::InputsWrite,
        Permission::Evidence,
        Permission::Audit,
        Permission::Tokens,
        Permission::Users,
    ];

    /// Stable name (`read`, `inputs_write`, …), as the session endpoint reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Agents => "agents",
            Permission::Quarantine => "quarantine",
            Permission::RegistryRead => "registry_read",
            Permission::RegistryWrite => "registry_write",
            Permission::InputsRead => "inputs_read",
            Permission::InputsWrite => "inputs_write",
            Permission::Evidence => "evidence",
            Permission::Audit => "audit",
            Permission::Tokens => "tokens",
            Permission::Users => "users",
        }
    }

    /// The roles that have this permission, least privileged first.
    pub fn roles(self) -> Vec<Role> {
        ROLES.into_iter().filter(|r| allows(*r, self)).collect()
    }
}

pub const ROLES: [Role; 4] = [Role::Viewer, Role::Engineer, Role::Auditor, Role::Admin];

/// The role table. Viewer: read. Engineer: viewer + agents, quarantine, registry read, inputs
/// read and write. Auditor: viewer + evidence, audit log, quarantine, registry read, inputs
/// read; never writes. Admin: everything.
pub fn allows(role: Role, p: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Viewer => p == Read,
        Role::Engineer => matches!(
            p,
            Read | Agents | Quarantine | RegistryRead | InputsRead | InputsWrite
        ),
        Role::Auditor => matches!(
            p,
            Read | Evidence | Audit | Quarantine | RegistryRead | InputsRead
        ),
    }
}

/// How a request was authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// `Authorization: Bearer <token>`.
    Token,
    /// The dashboard's session cookie: the SHA-256 of the session id and the session's CSRF
    /// token (derived from the id, [`crate::session::csrf_token`]).
    Session { id_hash: String, csrf: String },
}

/// Who made a request: the token's or the user's name, the role, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub via: Via,
}

impl Principal {
    /// `token` or `user`.
    pub fn kind(&self) -> &'static str {
        match self.via {
            Via::Token => "token",
            Via::Session { .. } => "user",
        }
    }

    /// The actor recorded in audit entries: `token:<name>` or `user:<name>`.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.kind(), self.name)
    }
}

/// Why a request is not allowed.
#[derive(Debug)]
pub enum AuthError {
    /// Neither an `Authorization: Bearer` header nor a session cookie (401).
    Missing,
    /// Malformed, unknown or revoked token (401).
    Invalid,
    /// The session cookie names no live session: unknown, signed out, expired, idle too long,
    /// the user disabled or the password changed (401).
    SessionEnded,
    /// A cookie-authenticated POST, PUT or DELETE without the session's CSRF token or from
    /// another origin (403); the text says which.
    Csrf(String),
    /// The role lacks the permission (403).
    Forbidden {
        needs: Permission,
        has: Role,
        /// `token` or `user`.
        who: &'static str,
    },
    Store(StoreError),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Missing => f.write_str(
                "authorization: missing; send \"Authorization: Bearer <token>\" (tokens: \
                 shopfloor-gateway token add) or sign in (POST /api/v1/login)",
            ),
            AuthError::Invalid => f.write_str("authorization: unknown or revoked token"),
            AuthError::SessionEnded => f.write_str(
                "authorization: the session has ended (signed out, expired, idle too long, or \
                 the user was changed); sign in again",
            ),
            AuthError::Csrf(why) => write!(f, "csrf: {why}"),
            AuthError::Forbidden { needs, has, who } => {
                let roles: Vec<&str> = needs.roles().iter().map(|r| r.as_str()).collect();
                write!(
                    f,
                    "role: requires {}; this {who}'s role is {}",
                    roles.join(" or "),
                    has.as_str()
                )
            }
            AuthError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// SHA-256 of a token, 64 lowercase hex (what the store keeps).
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token.
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether `text` has the shape of a token (checked before any database lookup).
pub fn looks_like_token(text: &str) -> bool {
    text.len() == TOKEN_LEN
        && text.starts_with(TOKEN_PREFIX)
        && text[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token of an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
pub fn bearer(header: Option<&str>) -> Result<&str, AuthError> {
    let h = header.ok_or(AuthError::Missing)?.trim();
    let (scheme, rest) = h.split_once(' ').ok_or(AuthError::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    Ok(rest.trim())
}

/// Resolves an `Authorization` header to the principal (no permission check).
pub async fn authenticate(db: &Db, header: Option<&str>) -> Result<Principal, AuthError> {
    let token = bearer(header)?;
    if !looks_like_token(token) {
        return Err(AuthError::Invalid);
    }
    let row = db
        .token_by_hash(&hash_token(token))
        .await
        .map_err(AuthError::Store)?
        .ok_or(AuthError::Invalid)?;
    if row.revoked_at.is_some() {
        return Err(AuthError::Invalid);
    }
    let role = Role::parse(&row.role).ok_or_else(|| {
        AuthError::Store(StoreError::Corrupt(format!(
            "token {} has unknown role {:?}",
            row.name, row.role
        )))
    })?;
    Ok(Principal {
        name: row.name,
        role,
        via: Via::Token,
    })
}

/// Resolves the header and checks the permission (bearer tokens only).
pub async fn authorize(
    db: &Db,
    header: Option<&str>,
    needs: Permission,
) -> Result<Principal, AuthError> {
    let p = authenticate(db, header).await?;
    permit(p, needs)
}

/// `p` if its role has `needs`.
fn permit(p: Principal, needs: Permission) -> Result<Principal, AuthError> {
    if allows(p.role, needs) {
        Ok(p)
    } else {
        Err(AuthError::Forbidden {
            needs,
            has: p.role,
            who: p.kind(),
        })
    }
}

/// The credentials of one request, as the API's guard sees them.
#[derive(Debug, Clone, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header (an unreadable value counts as present and empty).
    pub authorization: Option<&'a str>,
    /// Every `sf_session` cookie value sent.
    pub session_cookies: Vec<&'a str>,
    /// POST, PUT or DELETE (anything but GET, HEAD, OPTIONS).
    pub unsafe_method: bool,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The host the client addressed (`Host`, or `X-Forwarded-Host` from a trusted proxy).
    pub host: Option<&'a str>,
    /// The `X-CSRF-Token` header.
    pub csrf: Option<&'a str>,
}

/// Authenticates a request (bearer token first, else the session cookie), checks CSRF for
/// cookie-authenticated unsafe requests, then the role.
pub async fn authorize_request(
    db: &Db,
    web: &crate::session::WebAuth,
    c: &Credentials<'_>,
    needs: Permission,
) -> Result<Principal, AuthError> {
    let p = if c.authorization.is_some() {
        authenticate(db, c.authorization).await?
    } else if !c.session_cookies.is_empty() {
        let (p, csrf_hash) = crate::session::authenticate(db, web, &c.session_cookies).await?;
        if c.unsafe_method {
            crate::session::check_origin(c.origin, c.host).map_err(AuthError::Csrf)?;
            crate::session::check_csrf(c.csrf, &csrf_hash).map_err(AuthError::Csrf)?;
        }
        p
    } else {
        return Err(AuthError::Missing);
    };
    permit(p, needs)
}

/// Why a token cannot be created.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("name: {0}")]
    BadName(String),
    #[error("name: an active token named {0:?} exists; revoke it first or choose another name")]
    Exists(String),
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A token name: 1–64 of `A-Z a-z 0-9 . _ -`.
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1–64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may contain A-Z, a-z, 0-9, '.', '_' and '-' only".into());
    }
    Ok(())
}

/// Creates a token named `name` with `role` (audited with `actor`) and returns it: the only
/// time it is visible. A name may be reused once the token that had it is revoked.
pub async fn create_token(
    db: &Db,
    name: &str,
    role: Role,
    actor: &str,
) -> Result<String, TokenError> {
    check_token_name(name).map_err(TokenError::BadName)?;
    if db
        .tokens()
        .await?
        .iter()
        .any(|t| t.name == name && t.revoked_at.is_none())
    {
        return Err(TokenError::Exists(name.into()));
    }
    let token = generate_token().map_err(|e| TokenError::Random(e.to_string()))?;
    db.token_add(&TokenRow {
        name: name.into(),
        role: role.as_str().into(),
        hash: hash_token(&token),
        created_at: jiff::Timestamp::now().as_millisecond(),
        created_by: actor.into(),
        revoked_at: None,
    })
    .await?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(looks_like_token(&a), "{a}");
        assert_eq!(a.len(), TOKEN_LEN);
        assert_eq!(hash_token(&a).len(), 64);
        assert_ne!(hash_token(&a), hash_token(&b));
        assert!(!looks_like_token("sfk_short"));
        assert!(!looks_like_token(&a.replace("sfk_", "xyz_")));
        assert!(!looks_like_token(&format!("{}'", &a[..TOKEN_LEN - 1])));
    }

    #[test]
    fn bearer_header() {
        assert!(matches!(bearer(None), Err(AuthError::Missing)));
        assert!(matches!(bearer(Some("Basic abc")), Err(AuthError::Missing)));
        assert!(matches!(bearer(Some("Bearer")), Err(AuthError::Invalid)));
        assert_eq!(bearer(Some("bearer  sfk_x ")).unwrap(), "sfk_x");
    }

    #[test]
    fn role_table() {
        use Permission::*;
        let has = |r: Role| -> Vec<Permission> {
            Permission::ALL
                .into_iter()
                .filter(|p| allows(r, *p))
                .collect()
        };
        assert_eq!(has(Role::Viewer), vec![Read]);
        assert_eq!(
            has(Role::Engineer),
            vec![
                Read,
                Agents,
                Quarantine,
                RegistryRead,
                InputsRead,
                InputsWrite
            ]
        );
        assert_eq!(
            has(Role::Auditor),
            vec![Read, Quarantine, RegistryRead, InputsRead, Evidence, Audit]
        );
        assert_eq!(has(Role::Admin), Permission::ALL.to_vec());
        // Auditors never write; only admins manage tokens and users.
        for p in [RegistryWrite, InputsWrite, Tokens, Users] {
            assert!(!allows(Role::Auditor, p));
        }
        for r in [Role::Viewer, Role::Engineer, Role::Auditor] {
            assert!(!allows(r, Tokens) && !allows(r, Users));
        }
        assert_eq!(
            AuthError::Forbidden {
                needs: Evidence,
                has: Role::Engineer,
                who: "token",
            }
            .to_string(),
            "role: requires auditor or admin; this token's role is engineer"
        );
        assert_eq!(
            AuthError::Forbidden {
                needs: Users,
                has: Role::Auditor,
                who: "user",
            }
            .to_string(),
            "role: requires admin; this user's role is auditor"
        );
    }

    #[test]
    fn actors_name_the_kind() {
        let t = Principal {
            name: "ci".into(),
            role: Role::Admin,
            via: Via::Token,
        };
        assert_eq!(t.actor(), "token:ci");
        let u = Principal {
            name: "li.wei".into(),
            role: Role::Engineer,
            via: Via::Session {
                id_hash: "0".repeat(64),
                csrf: "x".into(),
            },
        };
        assert_eq!(u.actor(), "user:li.wei");
        assert_eq!(u.kind(), "user");
    }

    #[test]
    fn names() {
        assert!(check_token_name("ci-bot.1").is_ok());
        assert!(check_token_name("").is_err());
        assert!(check_token_name("a b").is_err());
        assert!(check_token_name(&"x".repeat(65)).is_err());
    }
}
