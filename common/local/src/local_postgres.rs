//! [`LocalPostgres`]: a PostgreSQL server of a test's own.
//!
//! Tests share the server `cargo xtask up` started, each with databases of its own.
//! A test whose *fault* is the database server — crashed and started again under
//! load (phase 4's `db-restart`) — would break every other test at the same moment,
//! so it runs a server of its own: the binaries `cargo xtask up` installed
//! (`/usr/lib/postgresql/<newest>/bin`), `initdb` into a temporary directory, a free
//! port, trust authentication on 127.0.0.1. The server is stopped (`immediate`) and
//! its directory removed when the value is dropped.
//!
//! PostgreSQL refuses to run as root: as root, every command runs as the `postgres`
//! user the Debian package created (`runuser -u postgres --`).

use crate::process;
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Server versions installed the Debian way (`/usr/lib/postgresql/15/bin/postgres`),
/// newest first. Client-only installs have `psql` there but no `postgres`.
pub fn installed_versions() -> Vec<String> {
    let mut versions: Vec<(u32, String)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("bin/postgres").is_file())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            Some((name.split('.').next()?.parse().ok()?, name))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, name)| name).collect()
}

/// Whether this process runs as root (from `/proc/self/status`, standard library only).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1)) // the effective uid
            == Some("0")
    })
}

/// How long `initdb`, a start or a stop may take on a busy two-core machine.
const LIMIT: Duration = Duration::from_secs(60);

/// A PostgreSQL server of this process's own; see the module docs.
#[derive(Debug)]
pub struct LocalPostgres {
    bin: PathBuf,
    /// Holds `data/` (the cluster), the socket and `server.log`.
    root: PathBuf,
    port: u16,
    as_root: bool,
}

impl LocalPostgres {
    /// `initdb`, then start on a free port; ready when this returns.
    pub fn start() -> anyhow::Result<LocalPostgres> {
        let version = installed_versions().into_iter().next().context(
            "no PostgreSQL server in /usr/lib/postgresql: run `cargo xtask up`, which installs it",
        )?;
        let root = std::env::temp_dir().join(format!(
            "ferriseats-postgres-{}",
            crate::local_kafka::random_id()
        ));
        std::fs::create_dir_all(&root)?;
        let server = LocalPostgres {
            bin: Path::new("/usr/lib/postgresql").join(version).join("bin"),
            port: crate::local_kafka::cluster::free_port()?,
            as_root: running_as_root(),
            root,
        };
        if server.as_root {
            // The postgres user writes here: the data directory, the socket, the log.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&server.root, std::fs::Permissions::from_mode(0o777))?;
        }
        let data = server.data();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
            ],
        )?;
        server.start_again()?;
        Ok(server)
    }

    /// `postgres://…/database` on this server (the password is ignored: trust).
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:postgres@127.0.0.1:{}/{database}",
            self.port
        )
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's own log.
    pub fn log(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// Stops the server the way a crash would (`pg_ctl stop -m immediate`: every
    /// connection cut, no checkpoint; the next start replays the write-ahead log).
    pub fn crash(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Starts the server (again) on its data, and waits until it accepts connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        // fsync=off: a crashed *server* leaves what it wrote in the operating system's
        // page cache, which the next start reads; only a crashed machine needs fsync.
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections=400 -c fsync=off",
            self.port,
            self.root.display()
        );
        let log = self.log();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log.to_string_lossy(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
    }

    fn data(&self) -> String {
        self.root.join("data").to_string_lossy().into_owned()
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_root {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        };
        cmd.args(args).current_dir(&self.root);
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut cmd = self.command(program, args);
        let out = process::output(&mut cmd, LIMIT)?;
        if !out.status.success() {
            bail!(
                "`{}` failed ({}): {}{}\nserver log: {}",
                process::display(&cmd),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                process::tail(&self.log(), 10)
            );
        }
        Ok(())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        let _ = self.crash();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
