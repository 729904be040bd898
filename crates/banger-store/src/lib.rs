//! bangerd's state in SQLite.
//!
//! The database runs in WAL mode with foreign keys on and a busy timeout.
//! Migrations are forward-only: each one runs in its own transaction and is
//! recorded in `schema_migrations`, so a database is upgraded exactly once per
//! step and a database from a newer banger is rejected instead of damaged.

mod leases;
mod migrate;
mod queries;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::Connection;
use thiserror::Error;

pub use leases::Lease;
pub use migrate::{MIGRATIONS, Migration};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("failed to open the state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("failed to apply migration {version} ({name})")]
    Migrate {
        version: i64,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the state database is at schema version {found}, newer than this banger knows ({known}); upgrade banger"
    )]
    TooNew { found: i64, known: i64 },
    #[error("database query failed")]
    Query(#[from] rusqlite::Error),
    #[error("stored {what} is malformed")]
    Corrupt {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An open state database.
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::setup(conn, path)
    }

    /// Opens a private in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: PathBuf::from(":memory:"),
            source,
        })?;
        Self::setup(conn, Path::new(":memory:"))
    }

    fn setup(mut conn: Connection, path: &Path) -> Result<Self> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        conn.busy_timeout(Duration::from_secs(5))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        migrate::apply(&mut conn, MIGRATIONS)?;
        Ok(Self { conn })
    }

    /// Versions recorded in `schema_migrations`, in order.
    pub fn applied_migrations(&self) -> Result<Vec<i64>> {
        migrate::applied(&self.conn)
    }
}
