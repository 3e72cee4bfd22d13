//! Migrations embedded in the binary, without a procedural macro.
//!
//! `sqlx::migrate!("./migrations")` reads a directory at compile time. It is a
//! procedural macro, and sqlx's macro crate builds a second copy of sqlx's PostgreSQL
//! and SQLite drivers (SQLite's C source included) for the compiler's own use: about
//! 80 CPU-seconds of phase 1's first build, for a file listing. [`embed_migrations!`]
//! does the same with `include_str!`: each file named once, its text compiled in, and
//! the same version, description and checksum as sqlx's directory reader gives
//! (existing databases see no change). [`check_embedded`] compares the two, so a file
//! added to the directory and not to the list fails a test.

use sqlx::migrate::{Migration, MigrationType, Migrator};
use std::borrow::Cow;
use std::path::Path;

/// A [`Migrator`] over SQL files compiled into the binary:
/// `embed_migrations!("migrations", ["0001_menu.sql", "0002_orders.sql"])`, the
/// directory relative to the calling crate's `Cargo.toml`.
#[macro_export]
macro_rules! embed_migrations {
    ($dir:literal, [$($file:literal),+ $(,)?]) => {
        $crate::migrations::embedded(&[$((
            $file,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", $dir, "/", $file)),
        )),+])
    };
}

/// Builds the migrator from `(file name, SQL)` pairs, named as sqlx names them:
/// `<version>_<description>.sql` (`.up.sql`/`.down.sql` for reversible ones), the
/// description with spaces for underscores, `-- no-transaction` on the first line to
/// run outside a transaction.
pub fn embedded(files: &[(&'static str, &'static str)]) -> Migrator {
    let migrations = files
        .iter()
        .map(|&(file, sql)| {
            let (version, rest) = file
                .split_once('_')
                .and_then(|(v, rest)| Some((v.parse::<i64>().ok()?, rest)))
                .unwrap_or_else(|| {
                    panic!("migration {file:?} is not named <version>_<description>.sql")
                });
            let migration_type = MigrationType::from_filename(rest);
            let description = rest
                .trim_end_matches(migration_type.suffix())
                .replace('_', " ");
            Migration::new(
                version,
                Cow::Owned(description),
                migration_type,
                sqlx::SqlSafeStr::into_sql_str(sql),
                sql.starts_with("-- no-transaction"),
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Compares an embedded migrator with what sqlx reads from `dir` now: the same
/// migrations (version, description, type), the same SQL (checksum). `Err` names the
/// difference — for a test beside each [`embed_migrations!`].
pub async fn check_embedded(dir: &Path, embedded: &Migrator) -> Result<(), String> {
    let on_disk = Migrator::new(dir)
        .await
        .map_err(|err| format!("reading {}: {err}", dir.display()))?;
    let describe = |m: &Migrator| -> Vec<String> {
        m.iter()
            .map(|m| {
                let checksum: String = m
                    .checksum
                    .iter()
                    .take(6)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                format!(
                    "{} {} ({:?}, no_tx {}, checksum {checksum}…)",
                    m.version, m.description, m.migration_type, m.no_tx
                )
            })
            .collect()
    };
    let (want, have) = (describe(&on_disk), describe(embedded));
    if want == have {
        Ok(())
    } else {
        Err(format!(
            "the migrations embedded do not match {}:\n  in the directory: {want:#?}\n  embedded:         {have:#?}\n\
             (list every file of the directory in embed_migrations!)",
            dir.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_embedded_migrator_matches_the_directory_and_a_missing_file_is_named() {
        let dir = tempdir();
        std::fs::write(
            dir.join("0001_first_table.sql"),
            "CREATE TABLE a (id TEXT);\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("0002_second.sql"),
            "-- no-transaction\nCREATE INDEX i ON a (id);\n",
        )
        .unwrap();
        let both = embedded(&[
            ("0001_first_table.sql", "CREATE TABLE a (id TEXT);\n"),
            (
                "0002_second.sql",
                "-- no-transaction\nCREATE INDEX i ON a (id);\n",
            ),
        ]);
        check_embedded(&dir, &both).await.unwrap();
        assert_eq!(both.iter().next().unwrap().description, "first table");
        assert!(both.iter().nth(1).unwrap().no_tx);

        let one = embedded(&[("0001_first_table.sql", "CREATE TABLE a (id TEXT);\n")]);
        let err = check_embedded(&dir, &one).await.unwrap_err();
        assert!(err.contains("2 second"), "{err}");

        let edited = embedded(&[
            (
                "0001_first_table.sql",
                "CREATE TABLE a (id TEXT, x TEXT);\n",
            ),
            (
                "0002_second.sql",
                "-- no-transaction\nCREATE INDEX i ON a (id);\n",
            ),
        ]);
        assert!(
            check_embedded(&dir, &edited).await.is_err(),
            "a changed file changes the checksum"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempdir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("ferriseats-migrations-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
