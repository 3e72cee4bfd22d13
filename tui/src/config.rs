//! What the dashboard watches and how often: the command line (clap, with an
//! environment variable for every flag).
//!
//! A **target** is one HTTP endpoint with a name: `all=http://127.0.0.1:9400`. Every
//! target is asked for `/health` and `/ready`; those that serve `/metrics` and
//! `/admin/incidents` (the phase 3 ops servers) also feed the metric panels and the
//! incident keys. A 404 just means "this target does not serve that", so the public
//! APIs (order 3000, notification 3002) can be watched for health alongside.

use std::time::Duration;

/// The targets of `cargo run -p phase3-observability -- all`: its ops server, and the
/// health of the two public APIs it serves.
pub const DEFAULT_TARGETS: &str = "all=http://127.0.0.1:9400,order-api=http://127.0.0.1:3000,notification-api=http://127.0.0.1:3002";

/// The targets of split mode: one ops server per service (ports 9401–9406), and the
/// two public APIs. Documented in the README; `--split` selects it.
pub const SPLIT_TARGETS: &str = "order=http://127.0.0.1:9401,payment=http://127.0.0.1:9402,\
inventory=http://127.0.0.1:9403,notification=http://127.0.0.1:9404,delivery=http://127.0.0.1:9405,\
relay=http://127.0.0.1:9406,order-api=http://127.0.0.1:3000,notification-api=http://127.0.0.1:3002";

/// The targets of `phase4-chaos all`: each supervised process's ops server (phase 3's
/// 9401–9406, the second order API replica on 9407, the gateways on 9410 and 9411),
/// the supervisor's (9420), a chaos scenario's (9430, while one runs) and the
/// live-status API. `--phase4` selects it.
pub const PHASE4_TARGETS: &str = "order-1=http://127.0.0.1:9401,order-2=http://127.0.0.1:9407,\
payment=http://127.0.0.1:9402,inventory=http://127.0.0.1:9403,notification=http://127.0.0.1:9404,\
delivery=http://127.0.0.1:9405,relay=http://127.0.0.1:9406,gateway-1=http://127.0.0.1:9410,\
gateway-2=http://127.0.0.1:9411,supervisor=http://127.0.0.1:9420,chaos=http://127.0.0.1:9430,\
notification-api=http://127.0.0.1:3002";

/// One endpoint to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    /// Base URL, without a trailing slash.
    pub url: String,
}

impl std::str::FromStr for Target {
    type Err = String;

    /// `NAME=URL`; a URL without a scheme gets `http://`.
    fn from_str(s: &str) -> Result<Target, String> {
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=URL, e.g. all=http://127.0.0.1:9400"))?;
        let (name, url) = (name.trim(), url.trim().trim_end_matches('/'));
        if name.is_empty() || url.is_empty() {
            return Err(format!("{s:?}: expected NAME=URL with both parts"));
        }
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        Ok(Target {
            name: name.to_owned(),
            url,
        })
    }
}

/// Parses a comma-separated list of `NAME=URL` (the form of `FERRISEATS_TARGETS`).
pub fn parse_targets(list: &str) -> Result<Vec<Target>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// The command line.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "tui",
    version,
    about = "FerrisEats terminal dashboard: health, orders/s, payment p99, lag, DLQ, outbox, breakers, incidents"
)]
pub struct Cli {
    /// A target to watch, NAME=URL; repeat it for several. Replaces the default
    /// (the ops server of `phase3-observability all` on 9400 and the APIs on 3000/3002).
    #[arg(long = "target", value_name = "NAME=URL")]
    pub targets: Vec<Target>,
    /// The same as a comma-separated list (used when no --target is given).
    #[arg(
        long,
        env = "FERRISEATS_TARGETS",
        value_name = "NAME=URL,…",
        hide_env_values = true
    )]
    pub targets_list: Option<String>,
    /// Watch the processes of split mode (ops ports 9401–9406) instead of `all`.
    #[arg(long, conflicts_with_all = ["targets", "targets_list"])]
    pub split: bool,
    /// Watch `phase4-chaos all`: every supervised process, both gateways (whose panel
    /// then appears) and the supervisor.
    #[arg(long, conflicts_with_all = ["targets", "targets_list", "split"])]
    pub phase4: bool,
    /// How often every target is polled.
    #[arg(long, env = "FERRISEATS_REFRESH", default_value = "1s", value_parser = humantime::parse_duration)]
    pub refresh: Duration,
    /// Per-request timeout: a slow endpoint is shown as down, never waited for.
    #[arg(long, env = "FERRISEATS_TIMEOUT", default_value = "800ms", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The sliding window of the latency percentiles.
    #[arg(long, env = "FERRISEATS_WINDOW", default_value = "30s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Total lag of a group above which the event log says so.
    #[arg(long, env = "FERRISEATS_LAG_THRESHOLD", default_value_t = 100.0)]
    pub lag_threshold: f64,
    /// Print one plain-text snapshot and exit (two polls, --refresh apart, so that
    /// rates exist). Works without a terminal; exits 0 even when services are down.
    #[arg(long)]
    pub once: bool,
}

/// Everything the dashboard runs with, resolved from [`Cli`].
#[derive(Debug, Clone)]
pub struct Config {
    pub targets: Vec<Target>,
    pub refresh: Duration,
    pub timeout: Duration,
    pub window: Duration,
    pub lag_threshold: f64,
    pub once: bool,
}

impl Cli {
    /// Flags first, then `FERRISEATS_TARGETS`, then the default for `all`.
    pub fn into_config(self) -> Result<Config, String> {
        let targets = if self.split {
            parse_targets(SPLIT_TARGETS)?
        } else if self.phase4 {
            parse_targets(PHASE4_TARGETS)?
        } else if !self.targets.is_empty() {
            self.targets
        } else if let Some(list) = self.targets_list.filter(|l| !l.trim().is_empty()) {
            parse_targets(&list)?
        } else {
            parse_targets(DEFAULT_TARGETS)?
        };
        if self.refresh.is_zero() {
            return Err("--refresh must be more than 0".into());
        }
        Ok(Config {
            targets,
            refresh: self.refresh,
            timeout: self.timeout,
            window: self.window,
            lag_threshold: self.lag_threshold,
            once: self.once,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        Cli::try_parse_from(std::iter::once("tui").chain(args.iter().copied()))
            .unwrap()
            .into_config()
            .unwrap()
    }

    #[test]
    fn the_default_matches_phase3_all() {
        let c = config(&[]);
        let names: Vec<_> = c.targets.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["all", "order-api", "notification-api"]);
        assert_eq!(c.targets[0].url, "http://127.0.0.1:9400");
        assert_eq!(c.refresh, Duration::from_secs(1));
        assert_eq!(c.timeout, Duration::from_millis(800));
    }

    #[test]
    fn repeated_targets_replace_the_default_and_urls_get_a_scheme() {
        let c = config(&[
            "--target",
            "pay=127.0.0.1:9402/",
            "--target",
            "all=http://h:9400",
            "--refresh",
            "250ms",
        ]);
        assert_eq!(
            c.targets,
            vec![
                Target {
                    name: "pay".into(),
                    url: "http://127.0.0.1:9402".into()
                },
                Target {
                    name: "all".into(),
                    url: "http://h:9400".into()
                },
            ]
        );
        assert_eq!(c.refresh, Duration::from_millis(250));
    }

    #[test]
    fn split_mode_watches_six_ops_servers_and_two_apis() {
        let c = config(&["--split"]);
        assert_eq!(c.targets.len(), 8);
        assert_eq!(c.targets[1].url, "http://127.0.0.1:9402");
    }

    #[test]
    fn a_target_without_a_name_is_refused() {
        assert!("http://x".parse::<Target>().is_err());
        assert!("=http://x".parse::<Target>().is_err());
        assert!(parse_targets("a=1:1, ,b=2:2").unwrap().len() == 2);
    }
}
