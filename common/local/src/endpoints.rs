//! Where the local infrastructure listens, the environment variables that move it,
//! and the one line a learner reads when it is not there.
//!
//! `cargo xtask up` starts PostgreSQL, Redis and Apache Kafka on these addresses; the
//! tests, the benchmarks and the phases' binaries connect to them unless the variable
//! named here points somewhere else. One definition, so the names cannot drift apart
//! between the crates that start the servers and the crates that use them.
//!
//! [`Unreachable`] is the error every binary, test harness and `cargo xtask doctor`
//! gives when one of them does not answer — "cannot reach PostgreSQL at
//! 127.0.0.1:5432 (connection refused): start it with `cargo xtask up`" — so the
//! first error a newcomer meets names the server, the address and the command, in
//! the same words everywhere.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// A server of the local set-up: what it is called, the variable that overrides its
/// address, and the address `cargo xtask up` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its name in xtask's output and state (`postgresql`).
    pub name: &'static str,
    /// Its name in a sentence (`PostgreSQL`).
    pub title: &'static str,
    pub env: &'static str,
    pub default: &'static str,
    /// The port an address that names none means (5432 in `postgres://db.example/x`).
    pub port: u16,
}

impl Endpoint {
    /// The variable's value if it is set and not empty, else the local default.
    pub fn url(&self) -> String {
        std::env::var(self.env)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| self.default.to_owned())
    }

    /// The `host:port` addresses `url` connects to: one for a URL
    /// (`postgres://u:p@db:5433/x` → `db:5433`, no password), one per broker for
    /// Kafka's comma-separated list. Empty when the URL names no TCP address (a Unix
    /// socket: `postgres:///x?host=/run/postgresql`).
    pub fn addresses(&self, url: &str) -> Vec<String> {
        url.split(',')
            .map(str::trim)
            .filter(|one| !one.is_empty())
            .filter_map(|one| authority(one, self.port))
            .collect()
    }

    /// [`Endpoint::addresses`] for a message: joined by commas, or the URL without its
    /// password when it names no TCP address.
    pub fn address(&self, url: &str) -> String {
        let addresses = self.addresses(url);
        if addresses.is_empty() {
            redact(url)
        } else {
            addresses.join(",")
        }
    }

    /// The error for this server not answering at `address`.
    pub fn unreachable(&'static self, address: impl Into<String>) -> Unreachable {
        Unreachable {
            endpoint: self,
            address: address.into(),
            reason: None,
            alternative: None,
        }
    }

    /// Whether something accepts TCP connections at `url`'s address, within
    /// `timeout` per address: the quick look a program takes before its client
    /// library, which would retry a refused connection for many seconds before
    /// giving up with words of its own. `Err` only when nothing can: every address
    /// refused the connection or does not resolve. An address that does not answer
    /// within `timeout` (a firewall that drops packets, a partition) proves nothing
    /// either way and counts as reachable: the client then tries, with its own
    /// timeouts. So does a URL without a TCP address.
    pub fn reach(&'static self, url: &str, timeout: Duration) -> Result<(), Unreachable> {
        let addresses = self.addresses(url);
        let mut first_reason = None;
        for address in &addresses {
            let resolved = match address.to_socket_addrs() {
                Ok(resolved) => resolved,
                Err(err) => {
                    first_reason
                        .get_or_insert_with(|| format!("{address} does not resolve: {err}"));
                    continue;
                }
            };
            for addr in resolved {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(_) => return Ok(()),
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                        first_reason.get_or_insert_with(|| "connection refused".to_owned());
                    }
                    Err(_) => return Ok(()), // no answer: not proof of absence
                }
            }
        }
        match first_reason {
            None => Ok(()),
            Some(reason) => Err(self.unreachable(addresses.join(",")).because(reason)),
        }
    }
}

/// A server of the local set-up does not answer: "cannot reach PostgreSQL at
/// 127.0.0.1:5432 (connection refused): start it with `cargo xtask up`", in one
/// line. It has no `source`, so an `anyhow` chain ends with it: whichever way a
/// program prints its error (`{:#}` on one line, `{:?}` with "Caused by:"), this line
/// is the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreachable {
    pub endpoint: &'static Endpoint,
    /// `host:port` (comma-separated for several Kafka brokers), never a password.
    pub address: String,
    /// What the client saw (`connection refused`), in parentheses after the address.
    pub reason: Option<String>,
    /// Another way out than starting the server, after the command.
    pub alternative: Option<String>,
}

impl Unreachable {
    /// With what the client saw (kept to one line).
    pub fn because(mut self, reason: impl fmt::Display) -> Self {
        let reason = reason.to_string();
        self.reason = Some(reason.split_whitespace().collect::<Vec<_>>().join(" "));
        self
    }

    /// With another way out, e.g. "or drop --database-url: the default SQLite file
    /// needs nothing".
    pub fn or(mut self, alternative: impl Into<String>) -> Self {
        self.alternative = Some(alternative.into());
        self
    }
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot reach {} at {}",
            self.endpoint.title, self.address
        )?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        write!(f, ": {START}")?;
        if let Some(alternative) = &self.alternative {
            write!(f, " ({alternative})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Unreachable {}

/// What starts every server of the local set-up.
pub const START: &str = "start it with `cargo xtask up`";

/// `host:port` of one URL or bare address (`scheme://user:pass@host:port/path?query`),
/// with `default_port` when it names none; `None` without a host (a Unix socket).
fn authority(url: &str, default_port: u16) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let hostport = &rest[..end];
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, hp)| hp);
    if hostport.is_empty() || hostport.starts_with('%') {
        return None; // no host, or a percent-encoded socket path
    }
    if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after.strip_prefix(':').unwrap_or("");
        let port = if port.is_empty() {
            default_port.to_string()
        } else {
            port.to_owned()
        };
        return Some(format!("[{host}]:{port}"));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() => Some(format!("{host}:{port}")),
        Some((host, _)) => Some(format!("{host}:{default_port}")),
        None => Some(format!("{hostport}:{default_port}")),
    }
}

/// The PostgreSQL server tests and benchmarks create their databases on.
pub const POSTGRES: Endpoint = Endpoint {
    name: "postgresql",
    title: "PostgreSQL",
    env: "TEST_DATABASE_URL",
    default: LOCAL_POSTGRES_URL,
    port: 5432,
};

/// Redis (phase 2's notification de-duplication, phase 4's rate limits).
pub const REDIS: Endpoint = Endpoint {
    name: "redis",
    title: "Redis",
    env: "REDIS_URL",
    default: "redis://127.0.0.1:6379",
    port: 6379,
};

/// The Kafka brokers clients bootstrap from (comma-separated `host:port`).
pub const KAFKA: Endpoint = Endpoint {
    name: "kafka",
    title: "Kafka",
    env: "KAFKA_BROKERS",
    default: "127.0.0.1:9092",
    port: 9092,
};

/// Prometheus, started by `cargo xtask up --observability`.
pub const PROMETHEUS: Endpoint = Endpoint {
    name: "prometheus",
    title: "Prometheus",
    env: "PROMETHEUS_URL",
    default: "http://127.0.0.1:9090",
    port: 9090,
};

/// The PostgreSQL server of a local set-up (`cargo xtask up`, the compose file), and
/// what tests and benchmarks use unless `TEST_DATABASE_URL` says otherwise.
pub const LOCAL_POSTGRES_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

/// `url` with its database name replaced by `database` (query parameters kept):
/// `postgres://u:p@h:5432/postgres?x=y` → `postgres://u:p@h:5432/DATABASE?x=y`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let server = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{server}/{database}?{query}"),
        None => format!("{server}/{database}"),
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for error messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    format!("{}{}:***{}", &url[..scheme_end + 3], user, &url[at..])
                }
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database(LOCAL_POSTGRES_URL, "bench"),
            "postgres://postgres:postgres@127.0.0.1:5432/bench"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "x"),
            "postgres://u:p@h:1/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[test]
    fn redacted_urls_hide_the_password() {
        assert_eq!(
            redact("postgres://postgres:secret@127.0.0.1:5432/db"),
            "postgres://postgres:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            redact("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("sqlite://orders.db"), "sqlite://orders.db");
    }

    #[test]
    fn addresses_are_host_and_port_without_the_password() {
        let pg = |url| POSTGRES.addresses(url);
        assert_eq!(pg(LOCAL_POSTGRES_URL), ["127.0.0.1:5432"]);
        assert_eq!(
            pg("postgres://u:secret@db.example/x?sslmode=disable"),
            ["db.example:5432"]
        );
        assert_eq!(pg("postgresql://u@[::1]:5433/x"), ["[::1]:5433"]);
        assert!(pg("postgres:///x?host=/run/postgresql").is_empty());
        assert!(pg("postgres://%2Frun%2Fpostgresql/x").is_empty());
        assert_eq!(
            REDIS.addresses("redis://:pw@127.0.0.1:1/0"),
            ["127.0.0.1:1"]
        );
        assert_eq!(
            KAFKA.addresses("127.0.0.1:9092, PLAINTEXT://h2:9093,h3"),
            ["127.0.0.1:9092", "h2:9093", "h3:9092"]
        );
        assert_eq!(
            POSTGRES.address("postgres://u:secret@/x"),
            "postgres://u:***@/x"
        );
    }

    #[test]
    fn unreachable_is_one_line_naming_the_server_the_address_and_the_command() {
        assert_eq!(
            POSTGRES.unreachable("127.0.0.1:1").to_string(),
            "cannot reach PostgreSQL at 127.0.0.1:1: start it with `cargo xtask up`"
        );
        let line = REDIS
            .unreachable("127.0.0.1:6379")
            .because("Connection refused\n  (os error 111)")
            .or("or pass --no-rate-limit")
            .to_string();
        assert_eq!(
            line,
            "cannot reach Redis at 127.0.0.1:6379 (Connection refused (os error 111)): \
             start it with `cargo xtask up` (or pass --no-rate-limit)"
        );
    }

    #[test]
    fn a_closed_port_is_unreachable_and_an_open_one_is_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap();
        let url = format!("redis://{open}");
        assert_eq!(REDIS.reach(&url, Duration::from_secs(2)), Ok(()));
        drop(listener); // now nothing listens there
        let err = REDIS.reach(&url, Duration::from_secs(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot reach Redis at {open} (connection refused): start it with `cargo xtask up`"
            )
        );
        // One broker of several answering is enough.
        let again = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let brokers = format!("{open},{}", again.local_addr().unwrap());
        assert_eq!(KAFKA.reach(&brokers, Duration::from_secs(2)), Ok(()));
        // Without a TCP address there is nothing to look at.
        assert_eq!(
            POSTGRES.reach("postgres:///x?host=/tmp", Duration::from_secs(2)),
            Ok(())
        );
    }
}
