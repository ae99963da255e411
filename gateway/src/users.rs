//! Dashboard users: names, the password policy, argon2id hashing, and their management through
//! the API (`GET`/`POST /api/v1/users`, `PUT /api/v1/users/{name}`, role admin) and the command
//! line (`shopfloor-gateway user add|passwd|disable|enable|list`).
//!
//! Invariants:
//! - Passwords are stored only as argon2id PHC strings with the argon2 crate's defaults
//!   (OWASP's: m = 19 MiB, t = 2, p = 1, 16-byte random salt); hashing and verifying run on the
//!   blocking pool (`spawn_blocking`), never on the async workers.
//! - Policy: at least [`MIN_PASSWORD`] characters (at most [`MAX_PASSWORD`]), not the user
//!   name; every refusal names the field.
//! - Every change is audited by the store (`user`, never the hash) with the actor; a new
//!   password or disabling ends the user's sessions in the same transaction.
//! - A password is shown once when the gateway generates it (`user add` without
//!   `--password-stdin`, `POST /api/v1/users` without `password`), and never again.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::{Value, json};
use shopfloor_store::{Ms, Store as _, StoreError, UserRow, UserUpdate};

use crate::api::{
    ApiError, ApiResult, AppState, Body, Caller, Params, created, json_value, ok, time, typed,
};
use crate::auth::Via;
use crate::db::Db;
use crate::model::Role;

/// Shortest accepted password (characters).
pub const MIN_PASSWORD: usize = 12;
/// Longest accepted password (characters): hashing cost stays bounded.
pub const MAX_PASSWORD: usize = 1024;

/// A well-formed argon2id PHC string with the default parameters whose hash matches no
/// password anyone knows: what an unknown user's login is verified against, so it costs what
/// a real check costs (a unit test keeps its parameters equal to a fresh hash's).
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2hvcGZsb29yLWR1bW15IQ$jVk6bDqgGi01v4w4IGI8Tl6wBgE3YRwq51x5Fw6RNJI";

/// Why a user cannot be created or changed.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// Bad input; the text names the field.
    #[error("{0}")]
    Invalid(String),
    #[error("name: a user named {0:?} exists")]
    Exists(String),
    #[error("name: no user named {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl From<UserError> for ApiError {
    fn from(e: UserError) -> Self {
        match e {
            UserError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            UserError::Exists(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            UserError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
            UserError::Internal(m) => ApiError::store(&m),
            UserError::Store(e) => ApiError::store(&e),
        }
    }
}

/// A user name: 1–64 of `a-z 0-9 . _ -` (lower case: sign-in lower-cases what is typed).
pub fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1–64 characters".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("may contain a-z, 0-9, '.', '_' and '-' only".into());
    }
    Ok(())
}

/// The password policy.
pub fn check_password(name: &str, password: &str) -> Result<(), String> {
    let n = password.chars().count();
    if n < MIN_PASSWORD {
        return Err(format!("must be at least {MIN_PASSWORD} characters"));
    }
    if n > MAX_PASSWORD {
        return Err(format!("must be at most {MAX_PASSWORD} characters"));
    }
    if password.to_lowercase() == name.to_lowercase() {
        return Err("must not be the user name".into());
    }
    if password.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A random password (18 bytes of OS randomness, 24 base64url characters).
pub fn generate_password() -> Result<String, UserError> {
    let mut bytes = [0u8; 18];
    getrandom::getrandom(&mut bytes)
        .map_err(|e| UserError::Internal(format!("no randomness from the OS: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn hash_blocking(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// The argon2id PHC string of `password` (on the blocking pool).
pub async fn hash_password(password: String) -> Result<String, UserError> {
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| UserError::Internal(e.to_string()))?
        .map_err(|e| UserError::Internal(format!("password hashing failed: {e}")))
}

fn verify_blocking(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "a stored password hash does not parse");
            false
        }
    }
}

/// Whether `password` matches `hash` (on the blocking pool). Without a hash (no such user) it
/// checks against [`DUMMY_HASH`] and answers false, taking as long as a real check. Passwords
/// over [`MAX_PASSWORD`] characters fail (after the same work).
pub async fn verify_password(hash: Option<String>, password: String) -> bool {
    let too_long = password.chars().count() > MAX_PASSWORD;
    let known = hash.is_some();
    let result = tokio::task::spawn_blocking(move || {
        let pw = if too_long { "" } else { password.as_str() };
        verify_blocking(hash.as_deref().unwrap_or(DUMMY_HASH), pw)
    })
    .await;
    known && !too_long && result.unwrap_or(false)
}

fn parse_role(text: &str) -> Result<Role, UserError> {
    Role::parse(text).ok_or_else(|| {
        UserError::Invalid("role: must be viewer, engineer, auditor or admin".into())
    })
}

/// Creates a user (audited with `actor`). `password: None` generates one; the password used is
/// returned (the only time it is visible).
pub async fn create_user(
    db: &Db,
    name: &str,
    role: Role,
    password: Option<String>,
    actor: &str,
    now: Ms,
) -> Result<(UserRow, Option<String>), UserError> {
    check_user_name(name).map_err(|r| UserError::Invalid(format!("name: {r}")))?;
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (generate_password()?, true),
    };
    check_password(name, &password).map_err(|r| UserError::Invalid(format!("password: {r}")))?;
    if db.user_get(name).await?.is_some() {
        return Err(UserError::Exists(name.into()));
    }
    let row = UserRow {
        name: name.into(),
        role: role.as_str().into(),
        password_hash: hash_password(password.clone()).await?,
        created_at: now,
        created_by: actor.into(),
        disabled_at: None,
        password_changed_at: now,
    };
    if !db.user_add(&row).await? {
        return Err(UserError::Exists(name.into()));
    }
    Ok((row, generated.then_some(password)))
}

/// What may change about a user.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub role: Option<String>,
    pub password: Option<String>,
    pub disabled: Option<bool>,
}

/// Applies `change` to user `name` (audited with `actor`); returns the user as it is now.
pub async fn change_user(
    db: &Db,
    name: &str,
    change: Change,
    actor: &str,
    now: Ms,
) -> Result<UserRow, UserError> {
    check_user_name(name).map_err(|r| UserError::Invalid(format!("name: {r}")))?;
    if change.role.is_none() && change.password.is_none() && change.disabled.is_none() {
        return Err(UserError::Invalid(
            "body: give at least one of role, password, disabled".into(),
        ));
    }
    let role = change
        .role
        .as_deref()
        .map(parse_role)
        .transpose()?
        .map(|r| r.as_str().to_owned());
    let password_hash = match change.password {
        Some(p) => {
            check_password(name, &p).map_err(|r| UserError::Invalid(format!("password: {r}")))?;
            Some(hash_password(p).await?)
        }
        None => None,
    };
    db.user_update(&UserUpdate {
        name: name.into(),
        role,
        password_hash,
        disabled: change.disabled,
        actor: actor.into(),
        at: now,
    })
    .await?
    .ok_or_else(|| UserError::NotFound(name.into()))
}

// ---------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------

fn user_json(u: &UserRow, tz: &jiff::tz::TimeZone) -> Value {
    json!({
        "name": u.name,
        "role": u.role,
        "created_at": time(u.created_at, tz),
        "created_by": u.created_by,
        "disabled_at": u.disabled_at.map(|t| time(t, tz)),
        "password_changed_at": time(u.password_changed_at, tz),
    })
}

/// `GET /api/v1/users`: every user (never a password or its hash).
pub(crate) async fn list(State(s): State<AppState>, p: Params) -> ApiResult {
    p.allow(&[])?;
    let users = s.db.users().await?;
    ok(json!({
        "users": users.iter().map(|u| user_json(u, &s.tz)).collect::<Vec<_>>()
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    role: String,
    password: Option<String>,
}

/// `POST /api/v1/users` `{"name", "role", "password"?}`: 201 with the user (and the generated
/// password when none was given).
pub(crate) async fn create(
    State(s): State<AppState>,
    Caller(who): Caller,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    p.allow(&[])?;
    let v = json_value(&headers, body, s.max_body_bytes)?;
    let req: NewUser = typed(v, "").map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    let role = parse_role(&req.role)?;
    let (row, generated) = create_user(
        &s.db,
        &req.name,
        role,
        req.password,
        &who.actor(),
        s.web.now(),
    )
    .await?;
    let mut out = user_json(&row, &s.tz);
    if let Some(pw) = generated {
        out["password"] = json!(pw);
    }
    created(out)
}

/// `PUT /api/v1/users/{name}` `{"role"?, "password"?, "disabled"?}`.
pub(crate) async fn update(
    State(s): State<AppState>,
    Caller(who): Caller,
    path: Result<UrlPath<String>, PathRejection>,
    p: Params,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let UrlPath(name) = path?;
    p.allow(&[])?;
    check_user_name(&name).map_err(|r| ApiError::bad("name", r))?;
    let v = json_value(&headers, body, s.max_body_bytes)?;
    let change: Change = typed(v, "").map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, m))?;
    // Signed in as this user: not a way to lock oneself out.
    if matches!(who.via, Via::Session { .. }) && who.name == name {
        if change.disabled == Some(true) {
            return Err(ApiError::bad(
                "disabled",
                "you cannot disable the user you are signed in as",
            ));
        }
        if change
            .role
            .as_deref()
            .is_some_and(|r| r != who.role.as_str())
        {
            return Err(ApiError::bad(
                "role",
                "you cannot change the role of the user you are signed in as",
            ));
        }
    }
    let row = change_user(&s.db, &name, change, &who.actor(), s.web.now()).await?;
    ok(user_json(&row, &s.tz))
}

// ---------------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------------

/// What to do (the subcommands of `user`).
#[derive(Debug, Clone)]
pub enum Action {
    Add {
        name: String,
        role: String,
        password_stdin: bool,
    },
    Passwd {
        name: String,
        password_stdin: bool,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    List,
}

/// The first line of standard input, without its line end.
fn password_from_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| format!("--password-stdin: cannot read standard input: {e}"))?;
    let line = text.lines().next().unwrap_or_default().to_owned();
    if line.is_empty() {
        return Err("--password-stdin: standard input is empty".into());
    }
    Ok(line)
}

fn utc(ms: Ms) -> String {
    jiff::Timestamp::from_millisecond(ms).map_or_else(|_| ms.to_string(), |t| t.to_string())
}

/// `shopfloor-gateway user …`. Exit 0, 2 (bad input), 1 (runtime failure).
pub fn main(config_path: &Path, action: Action) -> ExitCode {
    let cfg = match crate::cli::config(config_path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Read the password before anything else touches the terminal.
    let stdin_password = match &action {
        Action::Add {
            password_stdin: true,
            ..
        }
        | Action::Passwd {
            password_stdin: true,
            ..
        } => match password_from_stdin() {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    let rt = match crate::cli::runtime(false) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let db = match crate::cli::store(&cfg).await {
            Ok(db) => db,
            Err(code) => return code,
        };
        let actor = format!("cli:{}", crate::run::whoami());
        let now = jiff::Timestamp::now().as_millisecond();
        let outcome = run_action(&db, action, stdin_password, &actor, now).await;
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(UserError::Store(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
            Err(UserError::Internal(e)) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    })
}

/// The work of [`main`] on an open store (also what tests call).
pub async fn run_action(
    db: &Db,
    action: Action,
    stdin_password: Option<String>,
    actor: &str,
    now: Ms,
) -> Result<(), UserError> {
    match action {
        Action::Add { name, role, .. } => {
            let role = Role::parse(&role).ok_or_else(|| {
                UserError::Invalid(format!(
                    "--role: {role:?} is not one of viewer, engineer, auditor, admin"
                ))
            })?;
            let (row, generated) = create_user(db, &name, role, stdin_password, actor, now).await?;
            if let Some(pw) = generated {
                println!("{pw}");
                eprintln!(
                    "user {:?} ({}) created; the password above is shown only once",
                    row.name, row.role
                );
            } else {
                eprintln!("user {:?} ({}) created", row.name, row.role);
            }
        }
        Action::Passwd { name, .. } => {
            let (password, generated) = match stdin_password {
                Some(p) => (p, false),
                None => (generate_password()?, true),
            };
            let change = Change {
                password: Some(password.clone()),
                ..Change::default()
            };
            change_user(db, &name, change, actor, now).await?;
            if generated {
                println!("{password}");
                eprintln!(
                    "password of {name:?} changed; the new one above is shown only once; its \
                     sessions have ended"
                );
            } else {
                eprintln!("password of {name:?} changed; its sessions have ended");
            }
        }
        Action::Disable { name } => {
            let change = Change {
                disabled: Some(true),
                ..Change::default()
            };
            change_user(db, &name, change, actor, now).await?;
            eprintln!("user {name:?} disabled; its sessions have ended");
        }
        Action::Enable { name } => {
            let change = Change {
                disabled: Some(false),
                ..Change::default()
            };
            change_user(db, &name, change, actor, now).await?;
            eprintln!("user {name:?} enabled");
        }
        Action::List => {
            let users = db.users().await?;
            println!("name\trole\tstatus\tcreated_at\tcreated_by\tpassword_changed_at");
            for u in users {
                let status = match u.disabled_at {
                    Some(t) => format!("disabled since {}", utc(t)),
                    None => "active".into(),
                };
                println!(
                    "{}\t{}\t{status}\t{}\t{}\t{}",
                    u.name,
                    u.role,
                    utc(u.created_at),
                    u.created_by,
                    utc(u.password_changed_at)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_passwords() {
        assert!(check_user_name("li.wei-2").is_ok());
        assert!(check_user_name("").is_err());
        assert!(check_user_name("Li").is_err());
        assert!(check_user_name("a b").is_err());
        assert!(check_user_name("x'--").is_err());
        assert!(check_user_name(&"x".repeat(65)).is_err());
        assert_eq!(
            check_password("li", "short").unwrap_err(),
            "must be at least 12 characters"
        );
        assert_eq!(
            check_password("operator.one", "Operator.One").unwrap_err(),
            "must not be the user name"
        );
        assert!(check_password("li", "correct horse battery").is_ok());
        assert!(check_password("li", &"x".repeat(1025)).is_err());
        assert!(check_password("li", "twelve chars\u{0}").is_err());
        let p = generate_password().unwrap();
        assert_eq!(p.len(), 24);
        assert!(check_password("li", &p).is_ok());
    }

    #[test]
    fn hashes_are_argon2id_phc_strings() {
        let h = hash_blocking("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_blocking(&h, "correct horse battery"));
        assert!(!verify_blocking(&h, "correct horse batter"));
        assert_ne!(h, hash_blocking("correct horse battery").unwrap(), "salted");
        // The dummy hash has the real parameters, so it costs the same.
        let dummy = PasswordHash::new(DUMMY_HASH).unwrap();
        let real = PasswordHash::new(&h).unwrap();
        assert_eq!(dummy.algorithm, real.algorithm);
        assert_eq!(dummy.params, real.params);
        assert_eq!(dummy.hash.map(|x| x.len()), real.hash.map(|x| x.len()));
        assert!(!verify_blocking("not a hash", "x"));
    }
}
