//! Redis as a [`Service`]: notification de-duplication and status push (phase 2),
//! the shared rate limiter (phase 4).
//!
//! The services and tests connect to [`DEFAULT_URL`] unless `REDIS_URL` says
//! otherwise. Redis here holds only throw-away state, so the server xtask starts
//! keeps nothing on disk (`--save "" --appendonly no`): a restart starts empty,
//! exactly like a fresh test run expects.
//!
//! "Is it Redis?" needs no client library: Redis speaks RESP, a line-based text
//! protocol. A command is an array of strings — `PING` is the 14 bytes
//! `*1\r\n$4\r\nPING\r\n` — and a server answers `+PONG\r\n` (a *simple string*) or
//! `-ERR …\r\n` / `-NOAUTH …\r\n` (an *error*). That is all [`ping`] does, after an
//! `AUTH` when the URL carries a password.
//!
//! The server started here is a plain `redis-server --daemonize yes` whose pid file
//! lives under `.ferriseats/redis/`; `down` signals that pid (and only if it is still
//! `redis-server`). Installing uses Debian's package `redis-server`.

use crate::process::{self, Privilege};
use crate::services::{self, Service, Stop};
use anyhow::{Context, bail};
use common_local::endpoints;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The server the services and tests use when `REDIS_URL` is not set.
pub const DEFAULT_URL: &str = endpoints::REDIS.default;
/// Points the services and tests at another Redis.
pub const ENV_URL: &str = endpoints::REDIS.env;
const PORT: u16 = 6379;
/// Connect, write and read timeout of one check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub const SERVICE: Service = services::service! {
    name: endpoints::REDIS.name, port: PORT, env_override: ENV_URL, default_url: DEFAULT_URL,
};

/// Where the server xtask starts keeps its pid file and log (no data: see the
/// module docs).
fn dir() -> PathBuf {
    services::State::dir().join("redis")
}

/// Up means: 127.0.0.1:6379 answers as Redis. A server that wants a password
/// (`-NOAUTH`) is Redis too; `prepare` then explains how to give it the password.
fn is_up() -> bool {
    match ping(&parse_url(DEFAULT_URL).expect("the default URL parses")) {
        Ok(()) => true,
        Err(err) => err.downcast_ref::<NeedsPassword>().is_some(),
    }
}

fn installed() -> bool {
    process::on_path("redis-server")
}

fn start(_privilege: Privilege) -> anyhow::Result<Option<Stop>> {
    if !installed() {
        return Ok(None);
    }
    if is_up() {
        // Only reached when `up` found nothing on 6379 — unless we just installed
        // the package, whose set-up script may have started its own server.
        return Ok(Some(shutdown_command()));
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let pid_file = dir.join("redis.pid");
    // A stale pid file from a server that died would be mistaken for the new one's.
    let _ = std::fs::remove_file(&pid_file);
    let dir_arg = dir.display().to_string();
    let mut cmd = Command::new("redis-server");
    cmd.args(["--daemonize", "yes", "--bind", "127.0.0.1", "--port"])
        .arg(PORT.to_string())
        .args(["--save", "", "--appendonly", "no", "--dir", &dir_arg])
        .arg("--logfile")
        .arg(dir.join("redis.log"))
        .arg("--pidfile")
        .arg(&pid_file);
    // With --daemonize the command returns once the server has forked; its own
    // messages go to redis.log, this log only catches start-up errors.
    process::run_logged(
        &mut cmd,
        &services::log_path("redis", "start"),
        Duration::from_secs(30),
    )?;
    // The forked server writes its pid file a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.trim().parse().ok())
        {
            return Ok(Some(Stop::Process {
                pid,
                program: "redis-server".to_owned(),
            }));
        }
        if Instant::now() >= deadline {
            // Still stoppable, just less precisely (whatever answers on the port).
            return Ok(Some(shutdown_command()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `redis-cli -p 6379 shutdown nosave`: stops whichever Redis answers on the port.
fn shutdown_command() -> Stop {
    Stop::Command(
        ["redis-cli", "-p", "6379", "shutdown", "nosave"]
            .map(str::to_owned)
            .to_vec(),
    )
}

fn install(privilege: Privilege) -> anyhow::Result<()> {
    process::apt_install(privilege, "redis-server")
}

/// Prove that the tests' URL works.
fn prepare(_started_here: Option<Privilege>) -> anyhow::Result<()> {
    check_url(DEFAULT_URL).map_err(|err| {
        anyhow::anyhow!(
            "{err:#}\n\nThe tests use {DEFAULT_URL} and that does not work here. If your \
             Redis needs a password, say so in the URL:\n    \
             export {ENV_URL}=redis://:PASSWORD@127.0.0.1:6379"
        )
    })?;
    println!("redis: PING answered +PONG at {DEFAULT_URL}");
    Ok(())
}

/// Does the Redis at `url` answer PING (after AUTH, if the URL has a password)?
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let target = parse_url(url)?;
    ping(&target).with_context(|| format!("Redis at {}", services::redact(url)))
}

fn details() -> Option<String> {
    Some(format!(
        "no persistence, log {}",
        dir().join("redis.log").display()
    ))
}

fn manual() -> String {
    format!(
        "Redis is needed on 127.0.0.1:6379 (no password). Either:\n\
         \x20 Debian/Ubuntu:\n\
         \x20   sudo apt-get install -y redis-server\n\
         \x20   redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save \"\" --appendonly no\n\
         \x20 macOS (Homebrew):\n\
         \x20   brew install redis && brew services start redis\n\
         \x20 Docker:\n\
         \x20   docker run -d --name ferriseats-redis -p 6379:6379 redis:7\n\
         \x20 or a server elsewhere:\n\
         \x20   export {ENV_URL}=redis://[:PASSWORD@]HOST:PORT\n\
         then run `cargo xtask up` again."
    )
}

/// What a `redis://` URL says about where and how to connect.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

/// `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]` (the form the `redis` crate reads).
fn parse_url(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("redis://") else {
        bail!(
            "{ENV_URL} must look like redis://[:PASSWORD@]HOST:PORT (got {}): TLS (rediss://) \
             and Unix sockets are not checked by xtask",
            services::redact(url)
        );
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        Some((user, password)) => (
            Some(percent_decode(user)).filter(|u| !u.is_empty()),
            Some(percent_decode(password)).filter(|p| !p.is_empty()),
        ),
        None => (None, None),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        // `[::1]:6379`, `host:6379`; a bare `[::1]` has a colon but no port.
        Some((host, port)) if !port.ends_with(']') => (
            host,
            port.parse()
                .with_context(|| format!("bad port {port:?} in {}", services::redact(url)))?,
        ),
        _ => (hostport, PORT),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        bail!("no host in {}", services::redact(url));
    }
    Ok(Target {
        host: host.to_owned(),
        port,
        username,
        password,
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || u8::from_str_radix(text.get(i + 1..i + 3)?, 16).ok();
        match (bytes[i], hex()) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server answered `-NOAUTH`: it is Redis, but wants a password.
#[derive(Debug)]
struct NeedsPassword;

impl std::fmt::Display for NeedsPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server wants a password: put it in {ENV_URL} (redis://:PASSWORD@HOST:PORT)"
        )
    }
}

impl std::error::Error for NeedsPassword {}

/// Connects, authenticates if the target has a password, and expects `+PONG`.
fn ping(target: &Target) -> anyhow::Result<()> {
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", target.host))?
        .collect();
    let mut last_err = None;
    let stream = addrs.iter().find_map(|addr| {
        TcpStream::connect_timeout(addr, CHECK_TIMEOUT)
            .map_err(|err| last_err = Some(err))
            .ok()
    });
    let Some(stream) = stream else {
        return Err(last_err.map_or_else(
            || anyhow::anyhow!("{} resolves to no address", target.host),
            |err| anyhow::anyhow!("cannot connect to {}:{}: {err}", target.host, target.port),
        ));
    };
    stream.set_read_timeout(Some(CHECK_TIMEOUT))?;
    stream.set_write_timeout(Some(CHECK_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut call = |args: &[&str]| -> anyhow::Result<String> {
        writer.write_all(&encode_command(args))?;
        read_reply_line(&mut reader)
    };
    if let Some(password) = &target.password {
        let reply = match &target.username {
            Some(user) => call(&["AUTH", user, password])?,
            None => call(&["AUTH", password])?,
        };
        if reply != "+OK" {
            bail!("AUTH was refused: {reply}");
        }
    }
    let reply = call(&["PING"])?;
    if reply.starts_with("-NOAUTH") {
        return Err(NeedsPassword.into());
    }
    if reply != "+PONG" {
        bail!("PING was answered with {reply:?}, not +PONG: is this Redis?");
    }
    Ok(())
}

/// A command as a RESP array of bulk strings: `*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n`.
fn encode_command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply line without its `\r\n`. Bounded: something that is not Redis may send
/// a lot, or nothing at all (then the read timeout ends it).
fn read_reply_line(reader: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(512)
        .read_until(b'\n', &mut line)
        .context("no answer")?;
    if !line.ends_with(b"\r\n") {
        bail!(
            "not a Redis answer: {:?}",
            String::from_utf8_lossy(&line)
                .chars()
                .take(60)
                .collect::<String>()
        );
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn target(host: &str, port: u16, username: Option<&str>, password: Option<&str>) -> Target {
        Target {
            host: host.to_owned(),
            port,
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
        }
    }

    #[test]
    fn urls_are_read_like_the_redis_crate_reads_them() {
        assert_eq!(
            parse_url(DEFAULT_URL).unwrap(),
            target("127.0.0.1", 6379, None, None)
        );
        assert_eq!(
            parse_url("redis://cache").unwrap(),
            target("cache", 6379, None, None)
        );
        assert_eq!(
            parse_url("redis://:s%40cret@h:7000/2").unwrap(),
            target("h", 7000, None, Some("s@cret"))
        );
        assert_eq!(
            parse_url("redis://app:pw@[::1]:6380").unwrap(),
            target("::1", 6380, Some("app"), Some("pw"))
        );
        assert!(parse_url("rediss://h:6379").is_err());
        assert!(parse_url("redis://h:port").is_err());
    }

    #[test]
    fn commands_are_resp_arrays_of_bulk_strings() {
        assert_eq!(encode_command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            encode_command(&["AUTH", "a b"]),
            b"*2\r\n$4\r\nAUTH\r\n$3\r\na b\r\n"
        );
    }

    /// A one-connection server that reads what the client sends and answers with
    /// `replies`, one per command received.
    fn fake_server(replies: &'static [&'static str]) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            for reply in replies {
                let mut buf = [0; 256];
                if conn.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        port
    }

    #[test]
    fn a_server_answering_pong_is_redis() {
        let port = fake_server(&["+PONG\r\n"]);
        ping(&target("127.0.0.1", port, None, None)).unwrap();
    }

    #[test]
    fn a_password_is_sent_before_ping() {
        let port = fake_server(&["+OK\r\n", "+PONG\r\n"]);
        ping(&target("127.0.0.1", port, None, Some("pw"))).unwrap();
    }

    #[test]
    fn a_server_wanting_a_password_says_so() {
        let port = fake_server(&["-NOAUTH Authentication required.\r\n"]);
        let err = ping(&target("127.0.0.1", port, None, None)).unwrap_err();
        assert!(err.downcast_ref::<NeedsPassword>().is_some(), "{err:#}");
    }

    #[test]
    fn another_protocol_is_not_redis() {
        let port = fake_server(&["HTTP/1.1 400 Bad Request\r\n\r\n"]);
        let err = ping(&target("127.0.0.1", port, None, None)).unwrap_err();
        assert!(format!("{err:#}").contains("is this Redis?"), "{err:#}");
    }
}
