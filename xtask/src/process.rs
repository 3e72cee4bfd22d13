//! What only xtask does with other programs: install packages and run commands as
//! root or as another user. Everything else (echoed commands with deadlines, detached
//! servers, signals) is shared with the benchmarks in `common_local::process`.

pub use common_local::process::*;

use anyhow::bail;
use std::process::Command;
use std::time::Duration;

/// `apt-get install -y PACKAGE` as root (running `apt-get update` first if the
/// install fails: typically a fresh image whose package lists were never fetched).
pub fn apt_install(privilege: Privilege, package: &str) -> anyhow::Result<()> {
    if !on_path("apt-get") {
        bail!("cannot install {package} here: this is not a Debian/Ubuntu system (no apt-get)");
    }
    if privilege == Privilege::User {
        bail!("installing {package} needs root (or passwordless sudo)");
    }
    let apt_get = |args: &[&str]| {
        // `env` passes the variable through sudo, which otherwise resets the environment.
        let mut cmd = as_root(privilege, "env");
        cmd.args(["DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .args(args);
        run(&mut cmd, Duration::from_secs(20 * 60))
    };
    let install = ["install", "-y", "--no-install-recommends", package];
    if apt_get(&install).is_err() {
        apt_get(&["update"])?;
        apt_get(&install)?;
    }
    Ok(())
}

/// An error that already says, in one line, what to run: `up` shows it as it is,
/// without the service's page of alternatives (`manual`) after it.
#[derive(Debug)]
pub struct Fix(pub String);

impl std::fmt::Display for Fix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Fix {}

/// How we can run commands that need root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// We are root.
    Root,
    /// `sudo -n` works (passwordless sudo): prefix commands with it.
    Sudo,
    /// Neither: the user has to run such commands.
    User,
}

pub fn privilege() -> Privilege {
    let uid = output(Command::new("id").arg("-u"), Duration::from_secs(5))
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
    if uid.is_ok_and(|uid| uid == "0") {
        Privilege::Root
    } else if on_path("sudo")
        && succeeds(
            Command::new("sudo").args(["-n", "true"]),
            Duration::from_secs(5),
        )
    {
        Privilege::Sudo
    } else {
        Privilege::User
    }
}

/// `program args…` run as root: directly, or through `sudo -n`. As an ordinary user
/// the command is run as is and fails with its own message.
pub fn as_root(privilege: Privilege, program: &str) -> Command {
    match privilege {
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.args(["-n", program]);
            cmd
        }
        Privilege::Root | Privilege::User => Command::new(program),
    }
}

/// `argv` run as the system user `user` (e.g. `postgres`, who may log in to the
/// database over the Unix socket without a password).
pub fn as_user(privilege: Privilege, user: &str, argv: &[&str]) -> Command {
    let mut cmd = match privilege {
        Privilege::Root if on_path("runuser") => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).args(argv);
            cmd
        }
        Privilege::Root => {
            // `su` takes one shell command line: quote every word.
            let line = display(Command::new(argv[0]).args(&argv[1..]));
            let mut cmd = Command::new("su");
            cmd.args([user, "-s", "/bin/sh", "-c", &line]);
            cmd
        }
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.args(["-n", "-u", user]).args(argv);
            cmd
        }
        Privilege::User => {
            let mut cmd = Command::new(argv[0]);
            cmd.args(&argv[1..]);
            cmd
        }
    };
    // The user may not be allowed into our working directory (psql warns about it).
    cmd.current_dir(std::env::temp_dir());
    cmd
}
