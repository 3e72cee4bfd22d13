//! A README's checked tour on a system of its own (phases 2–4): the runner is
//! `common_local::tour`; this gives it a [`Scratch`] — four fresh databases and a
//! topic namespace, passed to the services through the variables their flags read —
//! and fails the test with the README line that no longer holds.

use super::Scratch;
use crate::config::Settings;
use common_local::tour::Tour;
use std::path::Path;

/// Runs every ```` ```console ```` block of `crate_dir/README.md` against `binary`
/// (what `cargo run -p NAME` stands for); `configure` adds what the tour needs besides
/// the scratch system (ports, substitutions).
pub async fn run_readme_tour(
    crate_dir: &Path,
    (name, binary): (&str, &Path),
    configure: impl FnOnce(Tour, &Settings) -> Tour + Send + 'static,
) {
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).expect("README.md");
    let scratch = Scratch::create(None).await;
    let s = scratch.settings.clone();
    let dir = std::env::temp_dir().join(format!("ferriseats-{name}-tour-{}", s.namespace));
    let (name, binary) = (name.to_owned(), binary.to_owned());
    let result = tokio::task::spawn_blocking(move || {
        let tour = Tour::new(&dir)
            .expect("the tour's directory")
            .binary(&name, &binary)
            .env("TOPIC_NAMESPACE", &s.namespace)
            .env("KAFKA_BROKERS", &s.brokers)
            .env("ORDER_DATABASE_URL", &s.order_database_url)
            .env("PAYMENT_DATABASE_URL", &s.payment_database_url)
            .env("INVENTORY_DATABASE_URL", &s.inventory_database_url)
            .env("DELIVERY_DATABASE_URL", &s.delivery_database_url);
        let mut tour = configure(tour, &s);
        let result = tour.run_all(&readme);
        drop(tour);
        result.map_err(|failure| format!("{failure}\n(the tour ran in {})", dir.display()))
    })
    .await
    .expect("the tour's thread");
    scratch.remove().await;
    match result {
        Ok(steps) => println!("{steps} commands of the README ran as it says"),
        Err(failure) => panic!("README.md's tour no longer holds — {failure}"),
    }
}
