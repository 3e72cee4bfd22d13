//! Each service's migrations are compiled in by `common::embed_migrations!`, each file
//! named at the call: the lists must match `migrations/*/` (a new file not listed would
//! never run), with the same checksums sqlx computes from the directories.

use phase2_events::services::{delivery, inventory, order, payment};
use std::path::Path;

#[tokio::test]
async fn the_embedded_migrations_are_the_directories() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let phase1 = root.join("../phase1-monolith/migrations");
    let own = |name: &str| root.join("migrations").join(name);
    let mut order = order::migrators().into_iter();
    let cases = [
        (phase1, order.next().unwrap()),
        (own("order"), order.next().unwrap()),
        (own("payment"), payment::migrators().remove(0)),
        (own("inventory"), inventory::migrators().remove(0)),
        (own("delivery"), delivery::migrators().remove(0)),
        (own("shared"), phase2_events::outbox::shared_migrator()),
    ];
    assert!(
        order.next().is_none(),
        "the order service has a third migrator: check it here"
    );
    let mut dirs = std::fs::read_dir(root.join("migrations"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| root.join("migrations").join(name).is_dir())
        .collect::<Vec<_>>();
    dirs.sort();
    assert_eq!(
        dirs,
        ["delivery", "inventory", "order", "payment", "shared"],
        "a migrations directory no test checks"
    );
    for (dir, migrator) in cases {
        if let Err(difference) = common::migrations::check_embedded(&dir, &migrator).await {
            panic!("{difference}");
        }
    }
}
