//! Where the local infrastructure listens, and the environment variables that move it.
//!
//! `cargo xtask up` starts PostgreSQL, Redis and Apache Kafka on these addresses; the
//! tests, the benchmarks and the phases' binaries connect to them unless the variable
//! named here points somewhere else. One definition, so the names cannot drift apart
//! between the crates that start the servers and the crates that use them.

/// A server of the local set-up: what it is called, the variable that overrides its
/// address, and the address `cargo xtask up` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub name: &'static str,
    pub env: &'static str,
    pub default: &'static str,
}

impl Endpoint {
    /// The variable's value if it is set and not empty, else the local default.
    pub fn url(&self) -> String {
        std::env::var(self.env)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| self.default.to_owned())
    }
}

/// The PostgreSQL server tests and benchmarks create their databases on.
pub const POSTGRES: Endpoint = Endpoint {
    name: "postgresql",
    env: "TEST_DATABASE_URL",
    default: LOCAL_POSTGRES_URL,
};

/// Redis (phase 3's idempotency keys, phase 4's rate limits).
pub const REDIS: Endpoint = Endpoint {
    name: "redis",
    env: "REDIS_URL",
    default: "redis://127.0.0.1:6379",
};

/// The Kafka brokers clients bootstrap from (comma-separated `host:port`).
pub const KAFKA: Endpoint = Endpoint {
    name: "kafka",
    env: "KAFKA_BROKERS",
    default: "127.0.0.1:9092",
};

/// Prometheus, started by `cargo xtask up --observability`.
pub const PROMETHEUS: Endpoint = Endpoint {
    name: "prometheus",
    env: "PROMETHEUS_URL",
    default: "http://127.0.0.1:9090",
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
}
