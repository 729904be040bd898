use rusqlite::{Connection, params};

use crate::{Result, StoreError};

/// One schema step. Versions only ever grow; a released migration is never edited.
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        sql: include_str!("migrations/0001_initial.sql"),
    },
    Migration {
        version: 2,
        name: "workspace",
        sql: include_str!("migrations/0002_workspace.sql"),
    },
    Migration {
        version: 3,
        name: "network",
        sql: include_str!("migrations/0003_network.sql"),
    },
];

pub(crate) fn applied(conn: &Connection) -> Result<Vec<i64>> {
    let mut stmt = conn.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
    let versions = stmt
        .query_map([], |row| row.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(versions)
}

/// Applies every migration newer than the database, each in its own transaction.
pub(crate) fn apply(conn: &mut Connection, migrations: &[Migration]) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
         );",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    let known = migrations.last().map_or(0, |m| m.version);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    for migration in migrations.iter().filter(|m| m.version > current) {
        let wrap = |source| StoreError::Migrate {
            version: migration.version,
            name: migration.name,
            source,
        };
        let tx = conn.transaction().map_err(wrap)?;
        tx.execute_batch(migration.sql).map_err(wrap)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES (?1, ?2)",
            params![migration.version, migration.name],
        )
        .map_err(wrap)?;
        tx.commit().map_err(wrap)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: &[Migration] = &[
        Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x INTEGER);",
        },
        Migration {
            version: 2,
            name: "two",
            sql: "ALTER TABLE a ADD COLUMN y TEXT;",
        },
    ];

    #[test]
    fn applies_each_step_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, &STEPS[..1]).unwrap();
        assert_eq!(applied(&conn).unwrap(), vec![1]);
        apply(&mut conn, STEPS).unwrap();
        apply(&mut conn, STEPS).unwrap();
        assert_eq!(applied(&conn).unwrap(), vec![1, 2]);
        conn.execute("INSERT INTO a (x, y) VALUES (1, 'z')", [])
            .unwrap();
    }

    #[test]
    fn failed_step_rolls_back_and_is_not_recorded() {
        let mut conn = Connection::open_in_memory().unwrap();
        let broken = [
            STEPS[0].clone_static(),
            Migration {
                version: 2,
                name: "broken",
                sql: "CREATE TABLE b (x INTEGER); THIS IS NOT SQL;",
            },
        ];
        let err = apply(&mut conn, &broken).unwrap_err();
        assert!(err.to_string().contains("migration 2 (broken)"), "{err}");
        assert_eq!(applied(&conn).unwrap(), vec![1]);
        let b_exists: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'b'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(b_exists, 0);
    }

    #[test]
    fn newer_database_is_rejected() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn, STEPS).unwrap();
        let err = apply(&mut conn, &STEPS[..1]).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 2, known: 1 }),
            "{err}"
        );
    }

    impl Migration {
        fn clone_static(&self) -> Migration {
            Migration {
                version: self.version,
                name: self.name,
                sql: self.sql,
            }
        }
    }
}
