//! A server of a test's own: started, crashed, started again on its data.

use common_local::local_postgres::LocalPostgres;
use std::process::Command;

fn psql(server: &LocalPostgres, sql: &str) -> String {
    let out = Command::new("psql")
        .args([&server.url("postgres"), "-XAtc", sql])
        .output()
        .expect("psql (installed by `cargo xtask up`)");
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_crashed_server_starts_again_with_what_was_committed() {
    let server = LocalPostgres::start().expect(
        "starting a PostgreSQL server of the test's own (binaries installed by `cargo xtask up`)",
    );
    psql(
        &server,
        "CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)",
    );

    server.crash().unwrap();
    let refused = Command::new("psql")
        .args([&server.url("postgres"), "-XAtc", "SELECT 1"])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a crashed server must not answer"
    );

    server.start_again().unwrap();
    assert_eq!(psql(&server, "SELECT n FROM kept"), "42");
}
