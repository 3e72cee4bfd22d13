//! Prometheus as a [`Service`] (`cargo xtask up --observability`), and `promtool`
//! for the test suite.
//!
//! Phase 3's services expose `/metrics`; Prometheus scrapes them every 5 s, keeps
//! the samples and evaluates the alerting rules. Its configuration is in the
//! repository, `phase3-observability/deploy/prometheus/` (`prometheus.yml`, the
//! rules `alerts.yml` and their unit tests `alerts.test.yml`), so the server xtask
//! starts is simply
//!
//! ```text
//! prometheus --config.file=phase3-observability/deploy/prometheus/prometheus.yml \
//!            --storage.tsdb.path=.ferriseats/prometheus \
//!            --web.listen-address=127.0.0.1:9090 --web.enable-lifecycle
//! ```
//!
//! detached ([`process::spawn_detached`]), logging to
//! `.ferriseats/logs/prometheus-server.log`, its pid written down for `down`.
//! `--web.enable-lifecycle` lets you reload an edited configuration or rule file
//! without a restart: `curl -X POST http://127.0.0.1:9090/-/reload`.
//!
//! Prometheus is not in [`services::SERVICES`]: only `up --observability` brings it
//! up (the tests do not need a running server). Installing uses Debian's package
//! `prometheus` (2.42), which also provides `promtool`, the checker the tests run
//! on the configuration ([`promtool`]). The package's own systemd service (if the
//! machine has systemd and starts it) reads `/etc/prometheus/prometheus.yml`, not
//! ours: right after installing, xtask stops it again so that its own start is
//! what runs on 9090.
//!
//! "Is it Prometheus?" needs no client library either: one HTTP GET of
//! `/-/healthy`, whose answer names Prometheus ([`http_get`]).

use crate::process::{self, Privilege};
use crate::services::{self, Service, Stop};
use anyhow::{Context, bail};
use common_local::endpoints;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where Prometheus answers when `PROMETHEUS_URL` is not set.
pub const DEFAULT_URL: &str = endpoints::PROMETHEUS.default;
/// Points xtask (and whoever wants it) at another Prometheus.
pub const ENV_URL: &str = endpoints::PROMETHEUS.env;
const NAME: &str = endpoints::PROMETHEUS.name;
const PORT: u16 = 9090;
const PROGRAM: &str = "prometheus";
const PACKAGE: &str = "prometheus";
/// An alert of ours: a Prometheus that has it loaded reads our rule file.
const OUR_ALERT: &str = "PaymentLatencyP99High";
/// Connect, write and read timeout of one HTTP request.
const HTTP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a freshly started server may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub const SERVICE: Service = services::service! {
    name: NAME, port: PORT, env_override: ENV_URL, default_url: DEFAULT_URL,
};

/// The configuration in the repository (its `rule_files` are relative to it).
pub fn config_file() -> PathBuf {
    process::workspace_root().join("phase3-observability/deploy/prometheus/prometheus.yml")
}

fn storage_dir() -> PathBuf {
    services::State::dir().join("prometheus")
}

fn log_file() -> PathBuf {
    services::log_path(NAME, "server")
}

/// Up means: 127.0.0.1:9090 answers `/-/healthy` like Prometheus.
fn is_up() -> bool {
    check_url(DEFAULT_URL).is_ok()
}

/// `program` on `$PATH`, or in `/usr/bin` (where the Debian package puts it, for a
/// shell whose `$PATH` lacks it).
fn find(program: &str) -> Option<PathBuf> {
    process::find(program, Some(Path::new("/usr/bin")))
}

fn installed() -> bool {
    find(PROGRAM).is_some()
}

fn start(_privilege: Privilege) -> anyhow::Result<Option<Stop>> {
    let Some(prometheus) = find(PROGRAM) else {
        return Ok(None);
    };
    let config = config_file();
    if !config.is_file() {
        bail!("{} is missing", config.display());
    }
    let storage = storage_dir();
    std::fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
    let mut cmd = Command::new(&prometheus);
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{PORT}"))
        .arg("--web.enable-lifecycle")
        .current_dir(process::workspace_root());
    let started = Instant::now();
    let answers = format!("on {DEFAULT_URL}");
    let child =
        process::spawn_until_ready(&cmd, &log_file(), PROGRAM, &answers, START_TIMEOUT, is_up)?;
    let pid = child.id();
    println!(
        "prometheus: pid {pid} answers on {DEFAULT_URL} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Some(Stop::Process {
        pid,
        program: PROGRAM.to_owned(),
    }))
}

fn install(privilege: Privilege) -> anyhow::Result<()> {
    let port_was_free = !services::port_open(PORT);
    process::apt_install(privilege, PACKAGE)?;
    // On a machine with systemd the package starts its own server (with
    // /etc/prometheus/prometheus.yml) on 9090; ours needs the port. In a container
    // without an init system the package could not start it, and this does nothing.
    if port_was_free && services::port_open(PORT) {
        println!("prometheus: stopping the server the Debian package started, so ours can run");
        let mut cmd = process::as_root(privilege, "service");
        cmd.args([PACKAGE, "stop"]);
        if let Err(err) = process::run(&mut cmd, Duration::from_secs(60)) {
            eprintln!("prometheus: {err:#}");
        }
    }
    Ok(())
}

/// Ready (the storage is loaded), and — for a server we only reuse — a warning if
/// it does not load our rules (it was started with some other configuration).
fn prepare(started_here: Option<Privilege>) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match http_get(DEFAULT_URL, "/-/ready") {
            Ok((200, _)) => break,
            Ok((status, body)) if Instant::now() >= deadline => {
                bail!(
                    "{DEFAULT_URL}/-/ready still answers {status}: {}",
                    body.trim()
                )
            }
            Err(err) if Instant::now() >= deadline => return Err(err),
            _ => std::thread::sleep(Duration::from_millis(250)),
        }
    }
    let rules = http_get(DEFAULT_URL, "/api/v1/rules").map(|(_, body)| body);
    if rules.is_ok_and(|body| body.contains(OUR_ALERT)) {
        println!("prometheus: ready at {DEFAULT_URL}, alerting rules of alerts.yml loaded");
    } else if started_here.is_some() {
        bail!(
            "the Prometheus xtask started has not loaded the rules of alerts.yml; see {}",
            log_file().display()
        );
    } else {
        eprintln!(
            "prometheus: warning: the server on {DEFAULT_URL} does not load FerrisEats' rules \
             (it was started with another configuration); stop it and run \
             `cargo xtask up --observability` to get one that reads {}",
            config_file().display()
        );
    }
    Ok(())
}

/// Does the Prometheus at `url` answer `/-/healthy`?
pub fn check_url(url: &str) -> anyhow::Result<()> {
    let (status, body) = http_get(url, "/-/healthy")?;
    if status != 200 || !body.contains("Prometheus") {
        bail!(
            "{url}/-/healthy answered {status} {:?}: not a healthy Prometheus",
            body.trim()
        );
    }
    Ok(())
}

/// A plain HTTP/1.1 GET of `path` on the server of `base` (`http://HOST:PORT…`):
/// (status code, body). Enough for Prometheus' small text and JSON answers.
pub fn http_get(base: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("{base} must look like http://HOST:PORT: https is not checked by xtask");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let hostport = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = hostport
        .to_socket_addrs()
        .with_context(|| format!("resolving {hostport}"))?
        .next()
        .with_context(|| format!("{hostport} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
        .with_context(|| format!("connecting to {hostport}"))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .with_context(|| format!("reading the answer of {hostport}"))?;
    parse_response(&String::from_utf8_lossy(&answer))
}

/// (status, body) of an HTTP/1.x response (a chunked body is returned as sent:
/// the callers only look for words in it).
fn parse_response(text: &str) -> anyhow::Result<(u16, String)> {
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .with_context(|| {
            format!(
                "not an HTTP answer: {:?}",
                text.chars().take(40).collect::<String>()
            )
        })?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_owned();
    Ok((status, body))
}

/// For `status`: the configuration, the data and the log of the server.
fn details() -> Option<String> {
    Some(format!(
        "config {}, data {}, log {}",
        config_file().display(),
        storage_dir().display(),
        log_file().display()
    ))
}

fn manual() -> String {
    format!(
        "Prometheus is needed on 127.0.0.1:{PORT}, reading {config}. Either:\n\
         \x20 Debian/Ubuntu:\n\
         \x20   sudo apt-get install -y --no-install-recommends prometheus\n\
         \x20   then `cargo xtask up --observability` starts it\n\
         \x20 any machine with the prometheus binary:\n\
         \x20   prometheus --config.file={config} --storage.tsdb.path=.ferriseats/prometheus \
         --web.listen-address=127.0.0.1:{PORT}\n\
         \x20 Docker (with Grafana and Jaeger):\n\
         \x20   docker compose -f phase3-observability/compose.yaml up -d --wait\n\
         \x20 or a server elsewhere:\n\
         \x20   export {ENV_URL}=http://HOST:PORT\n\
         then run `cargo xtask up --observability` again.",
        config = config_file().display()
    )
}

/// `promtool` (the tests check the configuration, the rules and the rules' unit
/// tests with it): on `$PATH`, or installed with the Debian package `prometheus`.
pub fn promtool() -> anyhow::Result<PathBuf> {
    if let Some(path) = find("promtool") {
        return Ok(path);
    }
    println!("promtool: not installed; installing the Debian package {PACKAGE}, which has it");
    install(process::privilege()).context(
        "promtool is needed by phase3-observability's tests: install the Debian package \
         `prometheus` (or put a promtool from prometheus.io on $PATH, or set PROMTOOL)",
    )?;
    find("promtool").context("the prometheus package was installed, but promtool is not there")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed() {
        let (status, body) = parse_response(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nPrometheus Server is Healthy.\n",
        )
        .unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, "Prometheus Server is Healthy.\n");
        let (status, _) = parse_response("HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
        assert_eq!(status, 503);
        assert!(parse_response("+PONG\r\n").is_err());
    }

    #[test]
    fn only_http_urls_are_checked() {
        let err = check_url("https://127.0.0.1:9090").unwrap_err();
        assert!(format!("{err:#}").contains("http://HOST:PORT"), "{err:#}");
    }

    #[test]
    fn the_configuration_xtask_starts_with_exists_and_names_its_rules() {
        let config = std::fs::read_to_string(config_file()).unwrap();
        assert!(config.contains("alerts.yml"));
        assert!(config_file().with_file_name("alerts.yml").is_file());
    }
}
