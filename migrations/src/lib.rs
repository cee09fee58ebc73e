//! The database schema as embedded SQL migrations (`migrations/sql/`).
//!
//! [`apply`] is safe to call from every replica at start: sqlx serializes
//! concurrent runs with a Postgres advisory lock and records what ran in
//! `_sqlx_migrations`, so each migration runs once.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

pub static MIGRATOR: Migrator = sqlx::migrate!("./sql");

/// Applies every pending migration.
pub async fn apply(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}
