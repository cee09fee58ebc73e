//! Postgres, the only source of truth: the pool, the translation of
//! database errors at the storage boundary (an unreachable database is
//! "unavailable", 503; two transactions in each other's way are a
//! "conflict", tried again; anything else unexpected is internal), and the
//! SQL of every table. Reads load what a decision needs in one statement;
//! [`apply`] writes a decision's effects in one.

pub mod apply;
pub mod idempotency;
pub mod inventory;
pub mod jobs;
pub mod outbox;
pub mod tracking;
pub mod types;

use std::str::FromStr as _;
use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use failover_platform::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A deadlock or serialization failure: the transaction was rolled
    /// back and may simply run again.
    #[error("transactions conflicted: {0}")]
    Conflict(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("a row vanished while it was being read")]
    Vanished,
}

impl StoreError {
    pub fn corrupt(err: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(err.to_string())
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }

    /// The same failure again, for another caller that shared the work.
    pub fn again(&self) -> StoreError {
        let text = || std::io::Error::other(self.to_string());
        match self {
            StoreError::Unavailable(_) => StoreError::Unavailable(sqlx::Error::Io(text())),
            StoreError::Conflict(_) => StoreError::Conflict(sqlx::Error::Protocol(self.to_string())),
            StoreError::Database(_) => StoreError::Database(sqlx::Error::Protocol(self.to_string())),
            StoreError::Corrupt(reason) => StoreError::Corrupt(reason.clone()),
            StoreError::Vanished => StoreError::Vanished,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_) => StoreError::Unavailable(err),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
                Some("57P01" | "57P02" | "57P03" | "53300") => StoreError::Unavailable(err),
                // serialization_failure, deadlock_detected
                Some("40001" | "40P01") => StoreError::Conflict(err),
                _ => StoreError::Database(err),
            },
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => {
                StoreError::Corrupt(err.to_string())
            }
            _ => StoreError::Database(err),
        }
    }
}

/// A lazily connecting pool: the gateway starts (and answers 503) while the
/// database is down, and recovers by itself when it is back.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    pool_with(settings, settings.max_connections, &[])
}

/// Planner settings of every session: the gateway's statements read a few
/// rows by key, from tables that grow fast (and whose statistics lag behind
/// then); random reads cost little more than sequential ones on the SSDs a
/// database runs on, so a lookup is planned as one.
const SESSION: [(&str, &str); 1] = [("random_page_cost", "1.1")];

/// The outbox relay's pool: its writes (published marks, failed attempts)
/// are harmless to lose in a crash (a row is then published again), so its
/// commits do not wait for the disk.
pub fn relay_pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    pool_with(settings, 2, &[("synchronous_commit", "off")])
}

fn pool_with(
    settings: &DatabaseSettings,
    max_connections: u32,
    options: &[(&str, &str)],
) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(settings.url.expose_secret())?
        .options(SESSION)
        .options(options.iter().copied());
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // No round trip to check a connection before each use: a broken one
        // fails its first statement, which is answered like an outage.
        .test_before_acquire(false)
        .connect_lazy_with(options))
}
