//! Schema versions during a rolling deploy: which database a build may run on, migrate, or must refuse.
//!
//! Each migration declares whether the previous release keeps running on the schema it makes
//! (expand/contract: adding a table, a nullable column or an index keeps it; renaming or dropping
//! what the previous release reads does not). The database records every migration it was given,
//! with that flag and the release that applied it, so an older build can tell whether a newer schema
//! is one it can run on, and which release it needs when it cannot. Both stores apply these rules.

/// One schema migration, as a store lists it: never edited once shipped, only appended to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// What it does, for the record and messages.
    pub name: &'static str,
    /// The statements (the store's SQL dialect).
    pub sql: &'static str,
    /// Whether the release before the one that adds it keeps running on the schema it makes.
    pub keeps_previous: bool,
}

/// A migration as the database recorded it when it was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// The schema version it made.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// See [`Migration::keeps_previous`].
    pub keeps_previous: bool,
    /// The plugd release that applied it.
    pub release: String,
}

/// How a build's schema compares with the database's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaCheck {
    /// The same version.
    Current,
    /// The database is older: these versions are still to apply.
    Behind {
        /// The database's version.
        database: i64,
    },
    /// The database is newer, and every migration past this build's keeps it running.
    NewerCompatible {
        /// The database's version.
        database: i64,
    },
}

/// Why a build cannot run on a database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// A newer schema that a migration past this build made incompatible with it.
    #[error(
        "the database schema is version {database}, newer than this plugd ({known}), and migration {version} \
         ({name:?}, applied by plugd {release}) does not keep older releases running: run plugd {release} or newer"
    )]
    Incompatible {
        /// The database's version.
        database: i64,
        /// This build's newest version.
        known: i64,
        /// The first migration that breaks this build.
        version: i64,
        /// Its name.
        name: String,
        /// The release that applied it: the oldest this database needs.
        release: String,
    },
    /// A newer schema with no record of its migrations (applied by a plugd that kept none).
    #[error("the database schema is version {database}, newer than this plugd ({known}): upgrade plugd")]
    NewerUnrecorded {
        /// The database's version.
        database: i64,
        /// This build's newest version.
        known: i64,
    },
    /// An older schema, and this build was told not to migrate it (`serve --no-migrate`, `db status`).
    #[error(
        "the database schema is version {database}, older than this plugd ({known}), which does not migrate it \
         here (serve --no-migrate, db status): run `plugd db migrate --db URL` first"
    )]
    NotMigrated {
        /// The database's version.
        database: i64,
        /// This build's newest version.
        known: i64,
    },
}

/// Compares a build that knows schema versions up to `known` with a database at `database`, whose
/// recorded migrations are `applied` (any order; only those past `known` matter).
///
/// ```
/// use plugd_core::schema::{check, AppliedMigration, SchemaCheck};
/// let applied = |keeps_previous| vec![AppliedMigration {
///     version: 8, name: "add nodes".into(), keeps_previous, release: "0.3.0".into(),
/// }];
/// assert_eq!(check(7, 7, &[]), Ok(SchemaCheck::Current));
/// assert_eq!(check(7, 8, &applied(true)), Ok(SchemaCheck::NewerCompatible { database: 8 }));
/// assert!(check(7, 8, &applied(false)).unwrap_err().to_string().contains("run plugd 0.3.0 or newer"));
/// ```
pub fn check(known: i64, database: i64, applied: &[AppliedMigration]) -> Result<SchemaCheck, SchemaError> {
    if database == known {
        return Ok(SchemaCheck::Current);
    }
    if database < known {
        return Ok(SchemaCheck::Behind { database });
    }
    let mut newer: Vec<&AppliedMigration> = applied.iter().filter(|m| m.version > known).collect();
    newer.sort_by_key(|m| m.version);
    let recorded = newer.iter().map(|m| m.version).eq(known + 1..=database);
    if !recorded {
        return Err(SchemaError::NewerUnrecorded { database, known });
    }
    match newer.into_iter().find(|m| !m.keeps_previous) {
        None => Ok(SchemaCheck::NewerCompatible { database }),
        Some(m) => Err(SchemaError::Incompatible {
            database,
            known,
            version: m.version,
            name: m.name.clone(),
            release: m.release.clone(),
        }),
    }
}

/// Whether a store opening a database at `database` migrates it (`Ok(true)`: apply the migrations
/// past `database` up to `known`), runs on it as it is (`Ok(false)`), or refuses it: [`check`], with
/// `migrate` false (`serve --no-migrate`, `db status`) refusing an older schema.
pub fn must_migrate(
    known: i64,
    database: i64,
    applied: &[AppliedMigration],
    migrate: bool,
) -> Result<bool, SchemaError> {
    match check(known, database, applied)? {
        SchemaCheck::Current | SchemaCheck::NewerCompatible { .. } => Ok(false),
        SchemaCheck::Behind { .. } if migrate => Ok(true),
        SchemaCheck::Behind { .. } => Err(SchemaError::NotMigrated { database, known }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(version: i64, keeps_previous: bool) -> AppliedMigration {
        AppliedMigration { version, name: format!("m{version}"), keeps_previous, release: format!("0.{version}.0") }
    }

    #[test]
    fn older_builds_run_on_compatible_schemas_only() {
        assert_eq!(check(7, 5, &[]), Ok(SchemaCheck::Behind { database: 5 }));
        let both = [applied(8, true), applied(9, true)];
        assert_eq!(check(7, 9, &both), Ok(SchemaCheck::NewerCompatible { database: 9 }));
        let second_breaks = [applied(9, false), applied(8, true)];
        match check(7, 9, &second_breaks) {
            Err(SchemaError::Incompatible { version: 9, release, .. }) => assert_eq!(release, "0.9.0"),
            other => panic!("{other:?}"),
        }
        assert_eq!(check(8, 9, &[applied(9, true)]), Ok(SchemaCheck::NewerCompatible { database: 9 }));
    }

    #[test]
    fn an_older_schema_is_migrated_only_when_migrating_is_on() {
        assert_eq!(must_migrate(7, 5, &[], true), Ok(true));
        assert_eq!(must_migrate(7, 5, &[], false), Err(SchemaError::NotMigrated { database: 5, known: 7 }));
        assert_eq!(must_migrate(7, 7, &[], false), Ok(false));
        assert_eq!(must_migrate(7, 8, &[applied(8, true)], true), Ok(false), "a newer schema is never altered");
    }

    #[test]
    fn a_newer_schema_without_its_record_is_refused() {
        assert_eq!(check(7, 9, &[applied(9, true)]), Err(SchemaError::NewerUnrecorded { database: 9, known: 7 }));
    }
}
