//! The compose files, checked without Docker: `phase2-events/compose.yaml` (the
//! infrastructure: PostgreSQL, Redis, Kafka) and `phase3-observability/compose.yaml`
//! (Prometheus, Grafana and Jaeger, with phase 2's file *included* rather than
//! copied).
//!
//! The compose files are the set-up of everyone who uses Docker instead of
//! `cargo xtask up`, yet nothing here can run them (no Docker engine on the
//! workshop's build machines). So their promises are checked by reading them.
//!
//! Of both files: they parse; no key is misspelt (compose ignores nothing silently,
//! but a typo in a rarely used file is found late); every image is pinned to a tag;
//! every named volume is declared.
//!
//! Of phase 2's ([`phase2`]): PostgreSQL, Redis and Kafka are published on the
//! standard host ports that the environment variables' defaults name; every service
//! has a healthcheck (so `docker compose up --wait` means *ready*); data lives in
//! named volumes; Kafka runs in KRaft mode with listeners that fit together; and the
//! header names the shared environment variables.
//!
//! Of phase 3's ([`phase3`]): the included file exists; the observability services
//! are there; every bind mount points at something that exists in the repository
//! (a missing path would be created by Docker as an empty directory, and Prometheus
//! would start without its configuration); the configuration Prometheus is told to
//! read is in the mounted directory; no published host port collides with the
//! services' own ports (the APIs on 3000–3002, the metrics on 9400–9406) or with
//! phase 2's infrastructure; and the header says how to use it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use yaml_serde::{Mapping, Value};

/// The top-level keys every compose file may have (besides `x-…` extensions).
const TOP_LEVEL_KEYS: &[&str] = &[
    "name", "services", "volumes", "networks", "configs", "secrets",
];

/// The service keys every compose file may use.
const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "ports",
    "expose",
    "volumes",
    "healthcheck",
    "depends_on",
    "restart",
    "user",
    "labels",
    "profiles",
];

/// A compose file of the repository, and the keys it may use beyond the common ones.
struct ComposeFile {
    /// Its directory, relative to the workspace root.
    dir: &'static str,
    /// Top-level keys it may have besides [`TOP_LEVEL_KEYS`].
    extra_top_level_keys: &'static [&'static str],
    /// Service keys it may use besides [`SERVICE_KEYS`].
    extra_service_keys: &'static [&'static str],
}

const PHASE2: ComposeFile = ComposeFile {
    dir: "phase2-events",
    extra_top_level_keys: &[],
    extra_service_keys: &[
        "env_file",
        "hostname",
        "container_name",
        "networks",
        "working_dir",
        "ulimits",
        "stop_grace_period",
        "stop_signal",
        "tmpfs",
        "shm_size",
        "deploy",
        "init",
    ],
};

const PHASE3: ComposeFile = ComposeFile {
    dir: "phase3-observability",
    extra_top_level_keys: &["include"],
    extra_service_keys: &["extra_hosts"],
};

/// Every compose file of the repository.
const FILES: [ComposeFile; 2] = [PHASE2, PHASE3];

impl ComposeFile {
    fn dir(&self) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(self.dir)
    }

    fn path(&self) -> PathBuf {
        self.dir().join("compose.yaml")
    }

    /// `DIR/compose.yaml`, for messages.
    fn name(&self) -> String {
        format!("{}/compose.yaml", self.dir)
    }

    fn text(&self) -> String {
        let path = self.path();
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
    }

    fn top(&self) -> Mapping {
        parse(&self.path())
    }

    fn services(&self) -> Mapping {
        services_of(&self.top())
    }

    fn service(&self, name: &str) -> Mapping {
        self.services()
            .get(name)
            .and_then(Value::as_mapping)
            .unwrap_or_else(|| panic!("{} has no service `{name}`", self.name()))
            .clone()
    }

    /// The comment at the top of the file.
    fn header(&self) -> String {
        self.text()
            .lines()
            .take_while(|line| line.starts_with('#') || line.trim().is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn assert_header_names(&self, needles: &[&str]) {
        let header = self.header();
        for needle in needles {
            assert!(
                header.contains(needle),
                "the header comment of {} should name {needle}",
                self.name()
            );
        }
    }
}

fn parse(path: &Path) -> Mapping {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    match yaml_serde::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not valid YAML: {err}", path.display()))
    {
        Value::Mapping(top) => top,
        other => panic!("{} is not a mapping: {other:?}", path.display()),
    }
}

fn services_of(top: &Mapping) -> Mapping {
    top.get("services")
        .and_then(Value::as_mapping)
        .expect("a `services` mapping")
        .clone()
}

fn keys(mapping: &Mapping) -> BTreeSet<String> {
    mapping
        .keys()
        .map(|key| key.as_str().expect("keys are strings").to_owned())
        .collect()
}

/// A scalar as the string a container sees in its environment.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The list under `key` of a service, as strings (`None`: the service has none).
fn list(service: &Mapping, key: &str) -> Option<Vec<String>> {
    service
        .get(key)
        .and_then(Value::as_sequence)
        .map(|items| items.iter().map(scalar).collect())
}

/// The `volumes:` entries of a service, as written.
fn volumes(service: &Mapping) -> Vec<String> {
    list(service, "volumes").unwrap_or_default()
}

/// Does this `volumes:` entry mount a path of the host (rather than a named volume)?
fn is_bind_mount(volume: &str) -> bool {
    volume.starts_with(['.', '/', '~'])
}

/// The bind mounts (`./SOURCE:TARGET[:ro]`) of a service: (source, target).
fn bind_mounts(service: &Mapping) -> Vec<(String, String)> {
    volumes(service)
        .into_iter()
        .filter(|v| is_bind_mount(v))
        .map(|v| {
            let mut parts = v.split(':');
            let source = parts.next().unwrap_or_default().to_owned();
            let target = parts.next().unwrap_or_default().to_owned();
            (source, target)
        })
        .collect()
}

/// Host ports published by every service of a compose file (`"HOST:CONTAINER"`,
/// `"IP:HOST:CONTAINER"` or the long form with `published:`): (service, port).
fn published_ports(services: &Mapping) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for (name, service) in services {
        let name = scalar(name);
        let Some(ports) = service.get("ports").and_then(Value::as_sequence) else {
            continue;
        };
        for port in ports {
            let host = match port {
                Value::Mapping(long) => scalar(long.get("published").expect("published port")),
                short => {
                    let short = scalar(short);
                    let parts: Vec<&str> = short.split(':').collect();
                    assert!(
                        parts.len() >= 2,
                        "service {name:?}: port {short:?} is not published on the host"
                    );
                    parts[parts.len() - 2].to_owned()
                }
            };
            let host = host
                .parse()
                .unwrap_or_else(|_| panic!("service {name:?}: host port {host:?} is not a number"));
            out.push((name.clone(), host));
        }
    }
    out
}

#[test]
fn only_known_top_level_keys() {
    for file in &FILES {
        let known: Vec<&str> = [TOP_LEVEL_KEYS, file.extra_top_level_keys].concat();
        for key in keys(&file.top()) {
            assert!(
                known.contains(&key.as_str()) || key.starts_with("x-"),
                "{}: unknown top-level key `{key}` (known: {known:?}, or x-…)",
                file.name()
            );
        }
    }
}

#[test]
fn service_keys_are_spelt_right() {
    let healthcheck_keys = [
        "test",
        "interval",
        "timeout",
        "retries",
        "start_period",
        "start_interval",
        "disable",
    ];
    for file in &FILES {
        let known: Vec<&str> = [SERVICE_KEYS, file.extra_service_keys].concat();
        for (name, service) in file.services() {
            let service = service.as_mapping().expect("a service is a mapping");
            for key in keys(service) {
                assert!(
                    known.contains(&key.as_str()),
                    "{}: service {name:?}: unknown key `{key}`",
                    file.name()
                );
            }
            if let Some(healthcheck) = service.get("healthcheck").and_then(Value::as_mapping) {
                for key in keys(healthcheck) {
                    assert!(
                        healthcheck_keys.contains(&key.as_str()),
                        "{}: service {name:?}: unknown healthcheck key `{key}`",
                        file.name()
                    );
                }
            }
        }
    }
}

#[test]
fn every_image_is_pinned_to_a_tag() {
    for file in &FILES {
        for (name, service) in file.services() {
            let image = service
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("{}: service {name:?} has no image", file.name()));
            let last = image.rsplit('/').next().unwrap_or(image);
            let tag = last
                .split_once(':')
                .map(|(_, tag)| tag)
                .unwrap_or_else(|| panic!("{image}: no tag (that means `latest`)"));
            assert!(
                !tag.is_empty() && tag != "latest" && !tag.contains('$'),
                "{image}: pin a version"
            );
        }
    }
}

#[test]
fn named_volumes_are_declared() {
    for file in &FILES {
        let declared = file
            .top()
            .get("volumes")
            .and_then(Value::as_mapping)
            .map(keys)
            .unwrap_or_default();
        for (name, service) in file.services() {
            let service = service.as_mapping().expect("a service is a mapping");
            for volume in volumes(service).iter().filter(|v| !is_bind_mount(v)) {
                let source = volume.split(':').next().unwrap_or_default();
                assert!(
                    declared.contains(source),
                    "{}: service {name:?}: volume `{source}` is not declared under top-level \
                     volumes",
                    file.name()
                );
            }
        }
    }
}

/// `phase2-events/compose.yaml`: the infrastructure.
mod phase2 {
    use super::*;

    /// `environment:` in either of its forms (a mapping, or a list of `KEY=VALUE`).
    fn environment(service: &Mapping) -> Vec<(String, String)> {
        match service.get("environment") {
            None => Vec::new(),
            Some(Value::Mapping(env)) => env.iter().map(|(k, v)| (scalar(k), scalar(v))).collect(),
            Some(Value::Sequence(env)) => env
                .iter()
                .map(|item| {
                    let item = scalar(item);
                    let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            Some(other) => panic!("environment is neither a mapping nor a list: {other:?}"),
        }
    }

    fn env_var(service: &Mapping, name: &str) -> String {
        environment(service)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("{name} is not set"))
    }

    #[test]
    fn the_standard_ports_are_published() {
        let published = published_ports(&PHASE2.services());
        for (name, port) in [("postgres", 5432), ("redis", 6379), ("kafka", 9092)] {
            assert!(
                published.contains(&(name.to_owned(), port)),
                "{name} must publish host port {port}, which the defaults of \
                 TEST_DATABASE_URL / REDIS_URL / KAFKA_BROKERS name"
            );
        }
    }

    #[test]
    fn every_service_has_a_healthcheck() {
        for (name, service) in PHASE2.services() {
            let healthcheck = service
                .get("healthcheck")
                .and_then(Value::as_mapping)
                .unwrap_or_else(|| panic!("service {name:?} has no healthcheck"));
            assert_ne!(
                healthcheck.get("disable"),
                Some(&Value::Bool(true)),
                "service {name:?}: healthcheck disabled"
            );
            let test = match healthcheck.get("test") {
                Some(Value::Sequence(words)) => words.iter().map(scalar).collect::<Vec<_>>(),
                Some(Value::String(line)) => vec![line.clone()],
                other => panic!("service {name:?}: healthcheck test is {other:?}"),
            };
            assert!(
                test.len() >= 2 || (test.len() == 1 && !test[0].is_empty()),
                "service {name:?}: empty healthcheck test"
            );
            if let Some(form) = test
                .first()
                .filter(|w| w.starts_with("CMD") || *w == "NONE")
            {
                assert!(
                    ["CMD", "CMD-SHELL"].contains(&form.as_str()),
                    "service {name:?}: healthcheck test starts with {form}"
                );
            }
        }
    }

    /// Every service keeps its data in a volume, and a named one (declared: see
    /// [`super::named_volumes_are_declared`]).
    #[test]
    fn data_lives_in_named_volumes() {
        for (name, service) in PHASE2.services() {
            let service = service.as_mapping().expect("a service is a mapping");
            let volumes = list(service, "volumes")
                .unwrap_or_else(|| panic!("service {name:?} has no volume"));
            for volume in volumes {
                assert!(
                    !is_bind_mount(&volume),
                    "service {name:?}: {volume} is a bind mount, not a named volume"
                );
            }
        }
    }

    #[test]
    fn postgres_and_redis_are_the_expected_versions_and_credentials() {
        let postgres = PHASE2.service("postgres");
        assert_eq!(env_var(&postgres, "POSTGRES_PASSWORD"), "postgres");
        let image = postgres.get("image").and_then(Value::as_str).unwrap();
        assert!(image.starts_with("postgres:16"), "{image}");
        let redis = PHASE2.service("redis");
        let image = redis.get("image").and_then(Value::as_str).unwrap();
        assert!(image.starts_with("redis:7"), "{image}");
    }

    #[test]
    fn kafka_is_the_version_cargo_xtask_up_runs_natively() {
        let kafka = PHASE2.service("kafka");
        let image = kafka.get("image").and_then(Value::as_str).unwrap();
        assert_eq!(
            image,
            format!("apache/kafka:{}", common_local::local_kafka::VERSION),
            "the compose file's Kafka must be the one `cargo xtask up` fetches \
             (common/local/src/local_kafka/mod.rs, xtask/kafka/pom.xml)"
        );
    }

    #[test]
    fn kafka_runs_in_kraft_mode_with_listeners_that_fit_together() {
        let kafka = PHASE2.service("kafka");
        let roles = env_var(&kafka, "KAFKA_PROCESS_ROLES");
        let roles: BTreeSet<&str> = roles.split(',').map(str::trim).collect();
        assert_eq!(
            roles,
            BTreeSet::from(["broker", "controller"]),
            "a single KRaft node is broker and controller"
        );
        let node_id = env_var(&kafka, "KAFKA_NODE_ID");
        let voters = env_var(&kafka, "KAFKA_CONTROLLER_QUORUM_VOTERS");
        assert!(
            voters.starts_with(&format!("{node_id}@")),
            "the only voter ({voters}) must be this node ({node_id})"
        );

        // name → port, from "NAME://HOST:PORT,…"
        let listeners = |var: &str| -> Vec<(String, String)> {
            env_var(&kafka, var)
                .split(',')
                .map(|listener| {
                    let (name, rest) = listener.trim().split_once("://").expect("NAME://HOST:PORT");
                    let port = rest.rsplit(':').next().unwrap_or_default();
                    (name.to_owned(), port.to_owned())
                })
                .collect()
        };
        let bound = listeners("KAFKA_LISTENERS");
        let names: BTreeSet<&str> = bound.iter().map(|(n, _)| n.as_str()).collect();
        let protocol_map = env_var(&kafka, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP");
        for name in &names {
            assert!(
                protocol_map
                    .split(',')
                    .any(|entry| entry.split(':').next() == Some(name)),
                "listener {name} has no security protocol in {protocol_map}"
            );
        }
        let controller = env_var(&kafka, "KAFKA_CONTROLLER_LISTENER_NAMES");
        assert!(
            names.contains(controller.as_str()),
            "{controller} is not a listener"
        );
        let inter_broker = env_var(&kafka, "KAFKA_INTER_BROKER_LISTENER_NAME");
        assert!(
            names.contains(inter_broker.as_str()),
            "{inter_broker} is not a listener"
        );

        // The host reaches the broker through the published port 9092; the broker must
        // tell it to come back to exactly that address.
        let advertised = env_var(&kafka, "KAFKA_ADVERTISED_LISTENERS");
        let host_listener = advertised
            .split(',')
            .find(|l| l.ends_with("://127.0.0.1:9092") || l.ends_with("://localhost:9092"))
            .unwrap_or_else(|| panic!("no listener is advertised as 127.0.0.1:9092: {advertised}"));
        let host_name = host_listener.split("://").next().unwrap();
        assert!(
            bound.contains(&(host_name.to_owned(), "9092".to_owned())),
            "the advertised {host_listener} must be bound on container port 9092"
        );
        for (name, _) in listeners("KAFKA_ADVERTISED_LISTENERS") {
            assert!(
                names.contains(name.as_str()),
                "{name} is advertised but not bound"
            );
            assert_ne!(
                name, controller,
                "the controller listener is never advertised"
            );
        }

        let cluster_id = env_var(&kafka, "CLUSTER_ID");
        assert!(
            cluster_id.len() == 22
                && cluster_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "CLUSTER_ID must be a UUID in base64url (22 characters), got {cluster_id:?}"
        );
    }

    #[test]
    fn the_header_names_the_shared_environment_variables() {
        PHASE2.assert_header_names(&[
            "DATABASE_URL",
            "TEST_DATABASE_URL",
            "REDIS_URL",
            "KAFKA_BROKERS",
            "cargo xtask up",
            "postgres://postgres:postgres@127.0.0.1:5432/postgres",
            "redis://127.0.0.1:6379",
            "127.0.0.1:9092",
        ]);
    }
}

/// `phase3-observability/compose.yaml`: Prometheus, Grafana and Jaeger, and phase 2's
/// file included.
mod phase3 {
    use super::*;

    /// The paths of the `include:` entries (short form `- FILE` or long form
    /// `- path:`), resolved against the directory of compose.yaml.
    fn included_files() -> Vec<PathBuf> {
        let include = PHASE3
            .top()
            .get("include")
            .and_then(Value::as_sequence)
            .expect("compose.yaml has an `include:` list")
            .clone();
        include
            .iter()
            .map(|entry| match entry {
                Value::Mapping(long) => scalar(long.get("path").expect("include entry has a path")),
                short => scalar(short),
            })
            .map(|path| PHASE3.dir().join(path))
            .collect()
    }

    #[test]
    fn it_includes_phase_2_instead_of_copying_it() {
        let included = included_files();
        let phase2 = PHASE2.path();
        assert!(
            included
                .iter()
                .any(|path| path.canonicalize().ok() == phase2.canonicalize().ok()),
            "compose.yaml must include ../phase2-events/compose.yaml (includes: {included:?})"
        );
        for path in &included {
            assert!(path.is_file(), "included {} does not exist", path.display());
            parse(path);
        }
        // Included services must not be defined again (compose refuses duplicates).
        let own = keys(&PHASE3.services());
        for path in &included {
            for name in keys(&services_of(&parse(path))) {
                assert!(
                    !own.contains(&name),
                    "service {name:?} is defined both here and in {}",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn the_observability_services_are_there() {
        let services = PHASE3.services();
        for name in ["prometheus", "grafana", "jaeger"] {
            assert!(
                services.contains_key(name),
                "compose.yaml has no service `{name}`"
            );
        }
    }

    #[test]
    fn every_bind_mount_exists_in_the_repository() {
        let mut mounts = 0;
        for (name, service) in PHASE3.services() {
            let service = service.as_mapping().unwrap();
            for (source, _) in bind_mounts(service) {
                assert!(
                    !source.starts_with('/'),
                    "service {name:?}: {source} is an absolute path; mount from the repository"
                );
                let path = PHASE3.dir().join(&source);
                assert!(
                    path.exists(),
                    "service {name:?}: {} does not exist (Docker would mount an empty \
                     directory in its place)",
                    path.display()
                );
                mounts += 1;
            }
        }
        assert!(mounts >= 3, "expected the prometheus and grafana mounts");
    }

    #[test]
    fn prometheus_reads_a_config_that_is_mounted_and_scrapes_the_host() {
        let prometheus = PHASE3.service("prometheus");
        let command = list(&prometheus, "command").expect("prometheus has a command list");
        let config = command
            .iter()
            .find_map(|arg| arg.strip_prefix("--config.file="))
            .expect("prometheus is given --config.file=");
        // Map the container path back to the repository through the bind mounts.
        let local = bind_mounts(&prometheus)
            .into_iter()
            .find_map(|(source, target)| {
                config
                    .strip_prefix(&format!("{target}/"))
                    .map(|rest| PHASE3.dir().join(source).join(rest))
            })
            .unwrap_or_else(|| {
                panic!("{config} is not inside a bind mount of the prometheus service")
            });
        let text = std::fs::read_to_string(&local)
            .unwrap_or_else(|err| panic!("{}: {err}", local.display()));
        assert!(
            text.contains("host.docker.internal:94"),
            "{} should scrape the services on the host (host.docker.internal)",
            local.display()
        );
        let extra_hosts = list(&prometheus, "extra_hosts")
            .expect("prometheus needs extra_hosts to reach the host on Linux");
        assert!(
            extra_hosts.contains(&"host.docker.internal:host-gateway".to_owned()),
            "{extra_hosts:?}"
        );
    }

    #[test]
    fn grafana_gets_its_provisioning_and_dashboards() {
        let grafana = PHASE3.service("grafana");
        let mounts = bind_mounts(&grafana);
        let target_of = |target: &str| {
            mounts
                .iter()
                .find(|(_, t)| t == target)
                .map(|(source, _)| PHASE3.dir().join(source))
                .unwrap_or_else(|| panic!("grafana does not mount anything at {target}"))
        };
        let provisioning = target_of("/etc/grafana/provisioning");
        assert!(provisioning.join("datasources").is_dir());
        assert!(provisioning.join("dashboards").is_dir());
        let dashboards = target_of("/var/lib/grafana/dashboards");
        assert!(dashboards.join("ferriseats.json").is_file());
    }

    #[test]
    fn published_ports_collide_with_nothing() {
        // The services' own ports: order/payment simulator/… APIs and metrics.
        let mut reserved: BTreeSet<u16> = [3000, 3001, 3002].into();
        reserved.extend(9400..=9406);
        // Phase 2's infrastructure, included into the same project.
        let mut taken: Vec<(String, u16)> = Vec::new();
        for path in included_files() {
            taken.extend(published_ports(&services_of(&parse(&path))));
        }
        for (name, port) in &taken {
            assert!(
                [5432, 6379, 9092].contains(port),
                "phase 2's {name} publishes {port}: update this test"
            );
        }
        let own = published_ports(&PHASE3.services());
        for want in [9090, 3030, 16686, 4318] {
            assert!(
                own.iter().any(|(_, port)| *port == want),
                "host port {want} is not published"
            );
        }
        for (name, port) in &own {
            assert!(
                !reserved.contains(port),
                "service {name:?} publishes host port {port}, which a FerrisEats service uses"
            );
            if let Some((other, _)) = taken.iter().find(|(_, p)| p == port) {
                panic!("service {name:?} publishes host port {port}, as does phase 2's {other}");
            }
            taken.push((name.clone(), *port));
        }
        let unique: BTreeSet<u16> = own.iter().map(|(_, p)| *p).collect();
        assert_eq!(unique.len(), own.len(), "a host port is published twice");
    }

    #[test]
    fn the_header_explains_usage() {
        PHASE3.assert_header_names(&[
            "docker compose -f phase3-observability/compose.yaml up -d --wait",
            "DATABASE_URL",
            "REDIS_URL",
            "KAFKA_BROKERS",
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318",
            "cargo xtask up --observability",
            "http://127.0.0.1:9090",
            "http://127.0.0.1:3030",
            "http://127.0.0.1:16686",
        ]);
    }
}
