//! Schema versioning: which embedded migrations a store still needs, and the
//! refusal to touch a store written by a newer shoal.
//!
//! Adapters record applied migrations in a `schema_migrations` table and
//! apply the plan inside one transaction that holds the write lock, so two
//! processes opening a fresh store at once apply each migration exactly once.

use crate::StoreError;
use sqlx::migrate::Migration;

/// A migration already applied to a store: its version and checksum.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Applied {
    pub(crate) version: i64,
    pub(crate) checksum: Vec<u8>,
}

/// The migrations of `known` that `applied` lacks, in version order.
///
/// Fails if the store has a version newer than any `known` one (written by a
/// newer shoal) or if an applied migration differs from the embedded one of
/// the same version (a shipped migration was edited, or the store comes from
/// a different lineage).
pub(crate) fn pending<'m>(
    known: &'m [Migration],
    applied: &[Applied],
    location: &str,
) -> Result<Vec<&'m Migration>, StoreError> {
    let supported = known.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(found) = applied
        .iter()
        .map(|a| a.version)
        .max()
        .filter(|&v| v > supported)
    {
        return Err(StoreError::SchemaTooNew {
            location: location.to_owned(),
            found,
            supported,
        });
    }
    for a in applied {
        let same = known.iter().find(|m| m.version == a.version);
        if same.is_none_or(|m| *m.checksum != *a.checksum) {
            return Err(StoreError::MigrationChanged {
                location: location.to_owned(),
                version: a.version,
            });
        }
    }
    let mut todo: Vec<&Migration> = known
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .filter(|m| applied.iter().all(|a| a.version != m.version))
        .collect();
    todo.sort_by_key(|m| m.version);
    Ok(todo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::migrate::MigrationType;
    use std::borrow::Cow;

    fn migrator(versions: &[i64]) -> Vec<Migration> {
        versions
            .iter()
            .map(|&v| {
                let sql = Cow::Owned(format!("CREATE TABLE t{v} (x INTEGER)"));
                Migration::new(
                    v,
                    Cow::Owned(format!("m{v}")),
                    MigrationType::Simple,
                    sql,
                    false,
                )
            })
            .collect()
    }

    fn applied(m: &[Migration], versions: &[i64]) -> Vec<Applied> {
        m.iter()
            .filter(|x| versions.contains(&x.version))
            .map(|x| Applied {
                version: x.version,
                checksum: x.checksum.to_vec(),
            })
            .collect()
    }

    #[test]
    fn fresh_store_gets_every_migration_in_order() {
        let m = migrator(&[2, 1, 3]);
        let todo = pending(&m, &[], "db").unwrap();
        assert_eq!(
            todo.iter().map(|m| m.version).collect::<Vec<_>>(),
            [1, 2, 3]
        );
    }

    #[test]
    fn only_missing_migrations_are_pending() {
        let m = migrator(&[1, 2, 3]);
        let todo = pending(&m, &applied(&m, &[1, 2]), "db").unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), [3]);
        assert!(
            pending(&m, &applied(&m, &[1, 2, 3]), "db")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn newer_store_is_refused() {
        let m = migrator(&[1, 2]);
        let newer = migrator(&[1, 2, 3]);
        let err = pending(&m, &applied(&newer, &[1, 2, 3]), "x.db").unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 3,
                    supported: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .contains("store schema version 3 is newer than this shoal supports")
        );
    }

    #[test]
    fn edited_migration_is_refused() {
        let m = migrator(&[1, 2]);
        let mut a = applied(&m, &[1, 2]);
        a[1].checksum[0] ^= 0xff;
        let err = pending(&m, &a, "x.db").unwrap_err();
        assert!(
            matches!(err, StoreError::MigrationChanged { version: 2, .. }),
            "{err:?}"
        );
    }
}
