//! Versioned schema migrations. Each backend keeps its own ordered SQL files
//! (`crates/store-sqlite/migrations`, `crates/store-postgres/migrations`), applies the ones a
//! database has not seen at start-up (and with `fascicolo migrate`), each in a transaction with
//! its row in `schema_migrations`, and refuses a database newer than the program. A released
//! migration never changes; a change to the schema is a new file.

use crate::StoreError;

/// One migration: its version (the file's number), name and SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The table that records what was applied (the same on both backends).
pub const TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// The migrations still to apply, in order, given the versions a database has applied; an error
/// when the database holds a version this program does not know (it was migrated by a newer one).
pub fn pending<'a>(all: &'a [Migration], applied: &[i64]) -> Result<Vec<&'a Migration>, StoreError> {
    let known = all.iter().map(|m| m.version).max().unwrap_or(0);
    if let Some(unknown) = applied.iter().copied().filter(|v| !all.iter().any(|m| m.version == *v)).max() {
        return Err(StoreError::Backend(format!(
            "the database schema has migration {unknown}, which this program does not know (it knows up to {known}): \
             it was upgraded by a newer release; run that release or a newer one"
        )));
    }
    Ok(all.iter().filter(|m| !applied.contains(&m.version)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Migration; 2] = [Migration { version: 1, name: "initial", sql: "" }, Migration { version: 2, name: "more", sql: "" }];

    #[test]
    fn only_what_was_not_applied_runs_and_a_newer_database_is_refused() {
        let v = |p: Vec<&Migration>| p.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(v(pending(&ALL, &[]).unwrap_or_default()), [1, 2]);
        assert_eq!(v(pending(&ALL, &[1]).unwrap_or_default()), [2]);
        assert!(pending(&ALL, &[1, 2]).is_ok_and(|p| p.is_empty()));
        let newer = pending(&ALL, &[1, 2, 3]).map(|_| ()).unwrap_err().to_string();
        assert!(newer.contains("migration 3") && newer.contains("up to 2"), "{newer}");
    }
}
