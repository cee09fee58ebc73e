//! The Postgres pool and the translation of database errors at the storage
//! boundary: an unreachable database is "unavailable" (503), anything else
//! unexpected is internal.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use failover_platform::config::DatabaseSettings;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
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
                _ => StoreError::Database(err),
            },
            _ => StoreError::Database(err),
        }
    }
}

/// A lazily connecting pool: the gateway starts (and answers 503) while the
/// database is down, and recovers by itself when it is back.
pub fn pool(settings: &DatabaseSettings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(settings.url.expose_secret())
}
