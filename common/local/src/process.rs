//! Running other programs from xtask and the benchmarks: echoed and bounded in time.
//!
//! Three rules keep a tool like this predictable:
//! * **Say what you run.** Every command that changes something is printed first, so
//!   the user can repeat it by hand or see where it got stuck.
//! * **Never wait forever.** Every child has a deadline; a hung `apt-get` or a server
//!   that never answers becomes an error message, not a frozen terminal.
//! * **Do not hand a pipe to a daemon.** A command such as `pg_ctlcluster start`
//!   leaves a server running in the background. If that server inherited our stdout
//!   pipe, whoever reads the pipe (a CI runner, `read_to_end`) would wait for it to
//!   exit — i.e. forever. Such commands write to a log file instead ([`run_logged`]).
//!
//! A server that has no daemon mode of its own (a Kafka node on the JVM) is started with
//! [`spawn_detached`]: its own session, stdin closed, output to a log file. It then
//! outlives xtask, and `down` finds it again by the pid that was written down; the
//! pid is checked against the program's name first ([`running`]) so that a pid the
//! system has since reused for something else is never signalled.

use anyhow::{Context, bail};
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace root (two levels above this crate, `common/local`). Known at compile
/// time, so a binary of this checkout finds it however it is started.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("common/local lives two levels below the workspace root")
        .to_path_buf()
}

/// Where cargo puts build output (respects `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The packages `cargo xtask bench` builds in release mode, always together in one
/// `cargo build`: built one by one, each would resolve its dependencies' features
/// differently and recompile sqlx, tokio and the rest for every benchmark.
pub const BENCH_PACKAGES: [&str; 4] = [
    "phase4-chaos",
    "phase1-monolith",
    "phase2-events",
    "phase3-observability",
];

/// `cargo build --release` of [`BENCH_PACKAGES`], in the workspace.
pub fn build_bench_packages() -> anyhow::Result<()> {
    let mut build = Command::new(cargo());
    build
        .args(["build", "--release"])
        .current_dir(workspace_root());
    for package in BENCH_PACKAGES {
        build.args(["-p", package]);
    }
    run(&mut build, Duration::from_secs(60 * 60))
}

/// The cargo that runs us (`cargo run` sets `$CARGO`), so a toolchain chosen with
/// `cargo +nightly xtask …` is used for the inner commands too.
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Is `program` an executable file somewhere on `$PATH`?
pub fn on_path(program: &str) -> bool {
    find(program, None).is_some()
}

/// Where `program` is: the first file of that name in a directory of `$PATH`, else
/// in `fallback` (a directory where an installer puts it that not every shell has on
/// its `$PATH`).
pub fn find(program: &str, fallback: Option<&Path>) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    });
    on_path.or_else(|| {
        fallback
            .map(|dir| dir.join(program))
            .filter(|path| path.is_file())
    })
}

/// A command as a user would type it (for messages).
pub fn display(cmd: &Command) -> String {
    let program = cmd.get_program();
    // `$CARGO` is a long toolchain path; the user knows it as `cargo`.
    let program = if std::env::var_os("CARGO").is_some_and(|cargo| cargo == program) {
        "cargo".into()
    } else {
        program.to_string_lossy()
    };
    let mut words = vec![program.into_owned()];
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        if arg.is_empty() || arg.contains([' ', '"', '\'', '\\', '$', '`']) {
            if arg.contains(['"', '\\', '$', '`']) {
                words.push(format!("'{}'", arg.replace('\'', r"'\''")));
            } else {
                // Reads better for SQL such as ALTER USER … PASSWORD 'x'.
                words.push(format!("\"{arg}\""));
            }
        } else {
            words.push(arg.into_owned());
        }
    }
    words.join(" ")
}

/// Runs `cmd` quietly and returns what it printed. Fails only if it could not be
/// started or ran longer than `limit`; the exit status is the caller's to judge.
pub fn output(cmd: &mut Command, limit: Duration) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    // Read both pipes on threads (a child blocks once a pipe buffer is full), and
    // give up on them shortly after the child exited in case a grandchild kept them.
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = pipe.read_to_end(&mut buf);
                let _ = tx.send(buf);
            });
        }
        rx
    };
    let stdout = collect(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = collect(child.stderr.take().map(|p| Box::new(p) as _));
    let status =
        wait_with_deadline(&mut child, limit).with_context(|| format!("`{}`", display(cmd)))?;
    let grace = Duration::from_secs(2);
    Ok(Output {
        status,
        stdout: stdout.recv_timeout(grace).unwrap_or_default(),
        stderr: stderr.recv_timeout(grace).unwrap_or_default(),
    })
}

/// Runs `cmd` quietly; `true` if it exited successfully within `limit`.
pub fn succeeds(cmd: &mut Command, limit: Duration) -> bool {
    output(cmd, limit).is_ok_and(|out| out.status.success())
}

/// Prints `cmd`, runs it with the terminal attached (for long, chatty commands such
/// as `cargo build` or `apt-get install`), and fails on a non-zero exit.
pub fn run(cmd: &mut Command, limit: Duration) -> anyhow::Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    let mut child = cmd
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let status = wait_with_deadline(&mut child, limit).with_context(|| format!("`{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Prints `cmd` and runs it with stdout and stderr going to `log` (see the module
/// docs: for commands that leave a daemon behind). On failure the error includes
/// the end of the log.
pub fn run_logged(cmd: &mut Command, log: &Path, limit: Duration) -> anyhow::Result<()> {
    let shown = display(cmd);
    println!("$ {shown}");
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let status = wait_with_deadline(&mut child, limit).with_context(|| format!("`{shown}`"))?;
    if !status.success() {
        bail!(
            "`{shown}` failed ({status}); end of {}:\n{}",
            log.display(),
            tail(log, 15)
        );
    }
    Ok(())
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {limit:?} and was killed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a (log) file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let tail = all[all.len().saturating_sub(lines)..].join("\n");
            if tail.is_empty() {
                "(empty)".to_owned()
            } else {
                tail
            }
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

/// `path` opened for appending (created if missing): where a process's output goes,
/// kept across its restarts.
pub fn append_log(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// Starts `cmd` in the background, detached from us: in its own session (via
/// `setsid` where it exists, else its own process group), so neither Ctrl-C in
/// this terminal nor closing it reaches the server; stdin closed; stdout and stderr
/// appended to `log`. The caller owns the returned child until xtask exits, after
/// which the server is re-parented and keeps running.
pub fn spawn_detached(cmd: &Command, log: &Path) -> anyhow::Result<Child> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;

    let shown = display(cmd);
    println!("$ {shown} >> {} 2>&1 &", log.display());
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = append_log(log)?;
    writeln!(file, "--- xtask: {shown}")?;
    // `setsid PROGRAM` execs PROGRAM in place (we are not a group leader), so the
    // pid we get back is the server's own.
    let mut detached = if on_path("setsid") {
        let mut wrapper = Command::new("setsid");
        wrapper.arg(cmd.get_program()).args(cmd.get_args());
        wrapper
    } else {
        let mut own = Command::new(cmd.get_program());
        own.args(cmd.get_args()).process_group(0);
        own
    };
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => detached.env(key, value),
            None => detached.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        detached.current_dir(dir);
    }
    detached
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))
}

/// Starts `cmd` with [`spawn_detached`] and waits, polling every 250 ms, until
/// `ready()` says the server answers. Fails with the end of `log` if the process
/// exits first, or if it has not answered within `limit` (it is then killed again);
/// `program` is its name (for messages and for [`kill`]) and `answers` what is
/// waited for (e.g. `on http://127.0.0.1:9090`).
pub fn spawn_until_ready(
    cmd: &Command,
    log: &Path,
    program: &str,
    answers: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<Child> {
    let mut child = spawn_detached(cmd, log)?;
    let pid = child.id();
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "{program} exited at once ({status}); end of {}:\n{}",
                log.display(),
                tail(log, 20)
            );
        }
        if ready() {
            return Ok(child);
        }
        if started.elapsed() >= limit {
            let _ = kill(pid, program);
            bail!(
                "{program} (pid {pid}) did not answer {answers} within {limit:?}, so it was \
                 stopped again; end of {}:\n{}",
                log.display(),
                tail(log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Is process `pid` alive and running `program`? A zombie (exited, not yet reaped
/// by its parent) counts as gone; so does a pid now used by another program.
pub fn running(pid: u32, program: &str) -> bool {
    let Ok(out) = output(
        Command::new("ps").args(["-o", "stat=", "-o", "comm=", "-p", &pid.to_string()]),
        Duration::from_secs(5),
    ) else {
        return false;
    };
    let line = String::from_utf8_lossy(&out.stdout);
    let mut cols = line.split_whitespace();
    match (cols.next(), cols.next()) {
        // `comm` is cut at 15 characters on Linux and may be a path on macOS.
        (Some(stat), Some(comm)) => {
            !stat.starts_with('Z') && program.starts_with(comm.rsplit('/').next().unwrap_or(comm))
        }
        _ => false,
    }
}

/// Sends `signal` (`TERM`, `KILL`, …) to `pid` with the `kill` program.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new("kill");
    cmd.args(["-s", signal, &pid.to_string()]);
    let out = output(&mut cmd, Duration::from_secs(5))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            display(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Waits until `pid` no longer runs `program`; `false` if it still does after `limit`.
pub fn wait_gone(pid: u32, program: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while running(pid, program) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// Stops process `pid` if it still runs `program`: SIGTERM, and SIGKILL if it has
/// not exited after `grace`. `Ok(false)` when it was not running (any more).
pub fn terminate(pid: u32, program: &str, grace: Duration) -> anyhow::Result<bool> {
    if !running(pid, program) {
        return Ok(false);
    }
    println!("$ kill -s TERM {pid}");
    signal(pid, "TERM")?;
    if wait_gone(pid, program, grace) {
        return Ok(true);
    }
    println!("{program} (pid {pid}) ignored SIGTERM for {grace:?}");
    kill(pid, program)?;
    Ok(true)
}

/// SIGKILL to `pid` if it still runs `program`, and wait until it is gone (a crash,
/// as the chaos scenarios want it: no shutdown code runs). `Ok(false)` when it was
/// not running.
pub fn kill(pid: u32, program: &str) -> anyhow::Result<bool> {
    if !running(pid, program) {
        return Ok(false);
    }
    println!("$ kill -s KILL {pid}");
    signal(pid, "KILL")?;
    if !wait_gone(pid, program, Duration::from_secs(10)) {
        bail!("{program} (pid {pid}) is still running 10 s after SIGKILL");
    }
    Ok(true)
}

/// `pid` and every process below it (from `/proc/PID/task/*/children`).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", all[i]));
        for task in tasks.into_iter().flatten().flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            all.extend(
                children
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// SIGTERM to the child and everything it started, SIGKILL to what is left after
/// 10 s. Positive pids only: procps-ng 4.0.2's `kill` misreads `kill -TERM -PGID`
/// (the form for a process group) and signals far more than the group.
pub fn stop_tree(child: &mut Child) {
    let signal = |name: &str, pids: &[u32]| {
        let _ = Command::new("kill")
            .args(["-s", name])
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    };
    let pids = tree(child.id());
    signal("TERM", &pids);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal("KILL", &pids);
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_a_shell_would_read_them() {
        let mut cmd = Command::new("psql");
        cmd.args([
            "-c",
            "ALTER USER postgres PASSWORD 'postgres'",
            "it's",
            "$HOME",
            "",
        ]);
        assert_eq!(
            display(&cmd),
            r#"psql -c "ALTER USER postgres PASSWORD 'postgres'" "it's" '$HOME' """#
        );
    }
}
