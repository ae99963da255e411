//! Throw-away databases for tests: [`ScratchDb::create`] makes a database with a unique name on
//! a PostgreSQL server, [`ScratchDb::drop_db`] removes it again.
//!
//! Invariants:
//! - Names are `<prefix>_<pid>_<nanos>`, with `prefix` restricted to `[a-z0-9_]` (starting with a
//!   letter) so the name is a valid identifier that needs no quoting rules beyond `"…"`, and
//!   short enough for PostgreSQL's 63-byte limit. A name that exists already is never reused:
//!   creation retries with a fresh one.
//! - `CREATE DATABASE` and `DROP DATABASE` cannot take the database name as a bind parameter;
//!   they are the only statements of this crate built at run time, from a validated name.
//! - Nothing happens on `Drop` (it cannot wait for the server); call [`ScratchDb::drop_db`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shopfloor_store::{Result, StoreError};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};

use crate::db;

/// Longest accepted prefix: `_<pid>_<nanos>` takes at most 1 + 10 + 1 + 20 bytes.
const MAX_PREFIX: usize = 63 - 32;

/// How long creating or dropping waits for the server.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A database created for one test (or one benchmark run), to be dropped at its end.
#[derive(Debug)]
pub struct ScratchDb {
    /// How to reach the server (its maintenance database, from the URL given to `create`).
    server: PgConnectOptions,
    name: String,
    url: String,
}

impl ScratchDb {
    /// Creates a database named `<prefix>_<pid>_<nanos>` on the server of `server_url` (any
    /// database URL of that server, e.g. `postgres://postgres@127.0.0.1:5432/test`; the URL's
    /// user needs the `CREATEDB` privilege).
    pub async fn create(server_url: &str, prefix: &str) -> Result<ScratchDb> {
        check_prefix(prefix)?;
        let server = server_options(server_url)?;
        let pool = admin_pool(&server).await?;
        let outcome = create_unique(&pool, prefix).await;
        pool.close().await;
        let name = outcome?;
        let url = with_database(server_url, &name)?;
        Ok(ScratchDb { server, name, url })
    }

    /// The URL of the new database: the server URL with its database replaced (query
    /// parameters such as `sslmode` are kept).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Terminates the connections still open to the database and drops it.
    pub async fn drop_db(self) -> Result<()> {
        let pool = admin_pool(&self.server).await?;
        let outcome = drop_named(&pool, &self.name).await;
        pool.close().await;
        outcome
    }
}

fn check_prefix(prefix: &str) -> Result<()> {
    let ok = prefix.len() <= MAX_PREFIX
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Db(format!(
            "scratch database prefix {prefix:?}: must be 1 to {MAX_PREFIX} characters of a-z, 0-9 \
             and _, starting with a letter"
        )))
    }
}

fn server_options(server_url: &str) -> Result<PgConnectOptions> {
    server_url
        .parse::<PgConnectOptions>()
        .map_err(|e| StoreError::Db(format!("invalid PostgreSQL URL: {e}")))
        .map(|o| o.disable_statement_logging())
}

/// A one-connection pool to the server, so connecting is bounded by [`TIMEOUT`].
async fn admin_pool(server: &PgConnectOptions) -> Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(TIMEOUT)
        .connect_with(server.clone())
        .await
        .map_err(|e| {
            StoreError::Db(format!(
                "cannot connect to PostgreSQL at {}: {e}",
                crate::describe(server)
            ))
        })
}

fn unique_name(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

async fn create_unique(pool: &PgPool, prefix: &str) -> Result<String> {
    let mut last = None;
    for _ in 0..5 {
        let name = unique_name(prefix);
        match sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(pool)
            .await
        {
            Ok(_) => return Ok(name),
            // 42P04 duplicate_database: the same nanosecond in another thread; 23505: two
            // concurrent CREATE DATABASE of one name race on the catalog's unique index.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04" | "23505")) =>
            {
                last = Some(e.to_string());
            }
            Err(e) => return Err(db(e)),
        }
    }
    Err(StoreError::Db(format!(
        "could not create a scratch database with prefix {prefix}: {}",
        last.unwrap_or_default()
    )))
}

async fn drop_named(pool: &PgPool, name: &str) -> Result<()> {
    sqlx::query_scalar!(
        r#"SELECT count(pg_terminate_backend(pid)) AS "terminated!" FROM pg_stat_activity
           WHERE datname = $1 AND pid <> pg_backend_pid()"#,
        name
    )
    .fetch_one(pool)
    .await
    .map_err(db)?;
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(pool)
    .await
    .map_err(db)?;
    Ok(())
}

/// `url` with its database (the path) replaced by `name`, keeping user, host, port and query.
fn with_database(url: &str, name: &str) -> Result<String> {
    let (base, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let authority = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| StoreError::Db(format!("not a postgres:// URL: {url:?}")))?;
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |i| authority + i);
    Ok(format!("{}/{name}{query}", &base[..path]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_is_replaced_in_urls() {
        let cases = [
            ("postgres://u@h:5432/test", "postgres://u@h:5432/x"),
            ("postgres://u@h:5432", "postgres://u@h:5432/x"),
            ("postgres://u@h/", "postgres://u@h/x"),
            (
                "postgresql://u:p@h:1/db?sslmode=require&application_name=a",
                "postgresql://u:p@h:1/x?sslmode=require&application_name=a",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").ok().as_deref(), Some(want), "{url}");
        }
        assert!(with_database("h:5432/db", "x").is_err());
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(check_prefix("sf_test1").is_ok());
        for bad in [
            "",
            "1abc",
            "Abc",
            "a-b",
            "a\"b",
            &"a".repeat(MAX_PREFIX + 1),
        ] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        let name = unique_name(&"a".repeat(MAX_PREFIX));
        assert!(name.len() <= 63, "{name}");
    }
}
