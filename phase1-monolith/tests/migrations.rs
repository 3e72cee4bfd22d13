//! Phase 1's migrations are compiled in by `common::embed_migrations!`, each file named
//! in `startup::migrator()`: the list must match `migrations/` (a new file not listed
//! would never run), with the same checksums sqlx computes from the directory.

use std::path::Path;

#[tokio::test]
async fn the_embedded_migrations_are_the_directorys() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let embedded = phase1_monolith::startup::migrator();
    if let Err(difference) = common::migrations::check_embedded(&dir, &embedded).await {
        panic!("{difference}");
    }
}
