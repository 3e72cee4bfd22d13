//! PostgreSQL as a [`Service`]: how to tell it is up, start it, install it, and
//! make the role the tests use work.
//!
//! The tests connect to [`DEFAULT_URL`] (`postgres:postgres@127.0.0.1:5432`) unless
//! `TEST_DATABASE_URL` says otherwise, and create a throw-away database per test.
//!
//! Starting and installing follow Debian/Ubuntu's packaging, which is what the
//! workshop machines and most CI images run: a server *cluster* is identified by
//! version and name (`15 main`), listed by `pg_lsclusters`, created by
//! `pg_createcluster` and started by `pg_ctlcluster`. `--skip-systemctl-redirect`
//! makes `pg_ctlcluster` start the server itself instead of asking systemd — in
//! containers and CI there is no systemd to ask. Elsewhere (macOS, other Linux
//! distributions) [`manual`] says what to run.

use crate::process::{self, Privilege};
use crate::services::{self, Service, Stop};
use anyhow::bail;
use common_local::endpoints;
use common_local::psql::{self, check_url};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The server the tests use when `TEST_DATABASE_URL` is not set.
pub const DEFAULT_URL: &str = endpoints::POSTGRES.default;
/// Points the tests (and `cargo xtask bench`) at another server.
pub const ENV_URL: &str = endpoints::POSTGRES.env;
const PORT: u16 = 5432;

pub const SERVICE: Service = services::service! {
    name: endpoints::POSTGRES.name, port: PORT, env_override: ENV_URL, default_url: DEFAULT_URL,
};

/// Up means: the port accepts TCP *and* `pg_isready` says the server accepts
/// connections (a port can be open while PostgreSQL is still recovering, or be
/// taken by a different program altogether).
fn is_up() -> bool {
    services::port_open(PORT)
        && (!process::on_path("pg_isready")
            || process::succeeds(
                Command::new("pg_isready").args(["-q", "-h", "127.0.0.1", "-p", "5432"]),
                Duration::from_secs(5),
            ))
}

/// One line of `pg_lsclusters`.
#[derive(Debug)]
struct Cluster {
    version: String,
    name: String,
    port: u16,
    online: bool,
}

fn clusters() -> anyhow::Result<Vec<Cluster>> {
    let out = process::output(
        Command::new("pg_lsclusters").arg("--no-header"),
        Duration::from_secs(10),
    )?;
    if !out.status.success() {
        bail!(
            "pg_lsclusters failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // Ver Cluster Port Status Owner Data-directory Log-file
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            Some(Cluster {
                version: (*cols.first()?).to_owned(),
                name: (*cols.get(1)?).to_owned(),
                port: cols.get(2)?.parse().ok()?,
                online: cols.get(3)?.starts_with("online"),
            })
        })
        .collect())
}

fn pg_ctlcluster(privilege: Privilege, cluster: (&str, &str), action: &str) -> Command {
    let mut cmd = process::as_root(privilege, "pg_ctlcluster");
    cmd.args(["--skip-systemctl-redirect", cluster.0, cluster.1, action]);
    cmd
}

fn stop_command(cmd: &Command) -> Stop {
    Stop::Command(
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect(),
    )
}

/// A server is installed the Debian way (`/usr/lib/postgresql/<version>/bin/postgres`).
fn installed() -> bool {
    !common_local::local_postgres::installed_versions().is_empty()
}

fn start(privilege: Privilege) -> anyhow::Result<Option<Stop>> {
    let versions = common_local::local_postgres::installed_versions();
    if versions.is_empty() {
        return Ok(None);
    }
    if !process::on_path("pg_lsclusters") {
        bail!(
            "PostgreSQL {} is installed in /usr/lib/postgresql, but pg_lsclusters \
             (package postgresql-common) is missing",
            versions[0]
        );
    }
    let log = services::log_path("postgresql", "start");
    let clusters = clusters()?;
    let Some(cluster) = clusters.iter().find(|c| c.port == PORT) else {
        // No cluster on 5432 yet (e.g. installed with create_main_cluster = false):
        // create one with the newest version.
        let version = &versions[0];
        if let Some(main) = clusters
            .iter()
            .find(|c| &c.version == version && c.name == "main")
        {
            bail!(
                "cluster {version}/main exists but uses port {}, not {PORT}",
                main.port
            );
        }
        let mut create = process::as_root(privilege, "pg_createcluster");
        create.args([version, "main", "--port", "5432", "--start"]);
        process::run_logged(&mut create, &log, Duration::from_secs(120))?;
        return Ok(Some(stop_command(&pg_ctlcluster(
            privilege,
            (version, "main"),
            "stop",
        ))));
    };
    let id = (cluster.version.as_str(), cluster.name.as_str());
    if cluster.online {
        // Only reached when `up` found nothing answering on 5432 — unless we just
        // installed the package, whose set-up script may have started the cluster.
        if is_up() {
            return Ok(Some(stop_command(&pg_ctlcluster(privilege, id, "stop"))));
        }
        bail!(
            "cluster {}/{} is running but does not answer on 127.0.0.1:{PORT}; \
             check listen_addresses in its postgresql.conf and its log (pg_lsclusters)",
            id.0,
            id.1
        );
    }
    process::run_logged(
        &mut pg_ctlcluster(privilege, id, "start"),
        &log,
        Duration::from_secs(120),
    )?;
    Ok(Some(stop_command(&pg_ctlcluster(privilege, id, "stop"))))
}

fn install(privilege: Privilege) -> anyhow::Result<()> {
    process::apt_install(privilege, "postgresql")
}

/// Make the tests' login work, then prove it.
fn prepare(started_here: Option<Privilege>) -> anyhow::Result<()> {
    if let Some(privilege) = started_here
        && privilege != Privilege::User
        && process::on_path("psql")
    {
        // A freshly installed Debian cluster checks passwords (scram-sha-256) on
        // TCP, and the `postgres` role has none yet. The `postgres` system user may
        // log in over the Unix socket without one ("peer"), so set it from there.
        let mut alter = process::as_user(
            privilege,
            "postgres",
            &[
                "psql",
                "-X",
                "-q",
                "-c",
                "ALTER USER postgres PASSWORD 'postgres'",
            ],
        );
        println!("$ {}", process::display(&alter));
        let out = process::output(&mut alter, Duration::from_secs(30))?;
        if !out.status.success() {
            eprintln!(
                "postgresql: could not set the password: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    psql::check_url(DEFAULT_URL).map_err(|err| {
        anyhow::anyhow!(
            "{err:#}\n\nThe tests log in with {} and that does not work here. Either give \
             the role `postgres` the password `postgres`:\n    \
             sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\"\n\
             or point the tests at a server that works:\n    \
             export {ENV_URL}=postgres://USER:PASSWORD@HOST:PORT/DB",
            services::redact(DEFAULT_URL)
        )
    })?;
    println!("postgresql: logged in as {}", services::redact(DEFAULT_URL));
    Ok(())
}

/// Nothing for `status` to add about PostgreSQL.
fn details() -> Option<String> {
    None
}

fn manual() -> String {
    let debian = if Path::new("/etc/debian_version").exists() {
        " (this machine)"
    } else {
        ""
    };
    format!(
        "PostgreSQL is needed on 127.0.0.1:5432, user `postgres`, password `postgres`. Either:\n\
         \x20 Debian/Ubuntu{debian}:\n\
         \x20   sudo apt-get install -y postgresql\n\
         \x20   sudo pg_ctlcluster --skip-systemctl-redirect $(ls /usr/lib/postgresql | sort -n | tail -1) main start\n\
         \x20   sudo -u postgres psql -c \"ALTER USER postgres PASSWORD 'postgres'\"\n\
         \x20 macOS (Homebrew):\n\
         \x20   brew install postgresql@17 && brew services start postgresql@17\n\
         \x20   psql postgres -c \"CREATE ROLE postgres SUPERUSER LOGIN PASSWORD 'postgres'\"\n\
         \x20 Docker:\n\
         \x20   docker run -d --name ferriseats-postgres -p 5432:5432 -e POSTGRES_PASSWORD=postgres postgres:17\n\
         \x20 or a server elsewhere:\n\
         \x20   export {ENV_URL}=postgres://USER:PASSWORD@HOST:PORT/DB\n\
         then run `cargo xtask up` again."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_urls_hide_the_password() {
        assert_eq!(
            services::redact(DEFAULT_URL),
            "postgres://postgres:***@127.0.0.1:5432/postgres"
        );
        assert_eq!(services::redact("postgres://h/db"), "postgres://h/db");
    }
}
