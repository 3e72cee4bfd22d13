//! `phase2-events/compose.yaml`, checked without Docker.
//!
//! The compose file is the set-up of everyone who uses Docker instead of
//! `cargo xtask up`, yet nothing here can run it (no Docker engine on the
//! workshop's build machines). So its promises are checked by reading it: it
//! parses; every image is pinned to a tag; PostgreSQL, Redis and Kafka are
//! published on the standard host ports that the environment variables' defaults
//! name; every service has a healthcheck (so `docker compose up --wait` means
//! *ready*); data lives in declared named volumes; Kafka runs in KRaft mode with
//! listeners that fit together; and no key is misspelt (compose ignores nothing
//! silently, but a typo in a rarely used file is found late).

use std::collections::BTreeSet;
use std::path::PathBuf;
use yaml_serde::{Mapping, Value};

fn compose_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phase2-events/compose.yaml")
}

fn compose_text() -> String {
    let path = compose_path();
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn compose() -> Mapping {
    match yaml_serde::from_str(&compose_text()).expect("compose.yaml is valid YAML") {
        Value::Mapping(top) => top,
        other => panic!("compose.yaml is not a mapping: {other:?}"),
    }
}

fn services() -> Mapping {
    compose()
        .get("services")
        .and_then(Value::as_mapping)
        .expect("compose.yaml has a `services` mapping")
        .clone()
}

fn service(name: &str) -> Mapping {
    services()
        .get(name)
        .and_then(Value::as_mapping)
        .unwrap_or_else(|| panic!("compose.yaml has no service `{name}`"))
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

/// The host ports a service publishes (`"HOST:CONTAINER"`, `"IP:HOST:CONTAINER"` or
/// the long form with `published:`).
fn published_ports(service: &Mapping) -> Vec<u16> {
    let Some(ports) = service.get("ports").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    ports
        .iter()
        .map(|port| match port {
            Value::Mapping(long) => scalar(long.get("published").expect("published port")),
            short => {
                let short = scalar(short);
                let parts: Vec<&str> = short.split(':').collect();
                assert!(
                    parts.len() >= 2,
                    "port {short:?} is not published on the host"
                );
                parts[parts.len() - 2].to_owned()
            }
        })
        .map(|port| port.parse().unwrap_or_else(|_| panic!("bad port {port:?}")))
        .collect()
}

#[test]
fn only_known_top_level_keys() {
    let known = [
        "name", "services", "volumes", "networks", "configs", "secrets",
    ];
    for key in keys(&compose()) {
        assert!(
            known.contains(&key.as_str()) || key.starts_with("x-"),
            "unknown top-level key `{key}` (known: {known:?}, or x-…)"
        );
    }
}

#[test]
fn service_keys_are_spelt_right() {
    let known = [
        "image",
        "command",
        "entrypoint",
        "environment",
        "env_file",
        "ports",
        "expose",
        "volumes",
        "healthcheck",
        "depends_on",
        "restart",
        "hostname",
        "container_name",
        "networks",
        "user",
        "working_dir",
        "labels",
        "ulimits",
        "stop_grace_period",
        "stop_signal",
        "tmpfs",
        "shm_size",
        "profiles",
        "deploy",
        "init",
    ];
    for (name, service) in services() {
        let service = service.as_mapping().expect("a service is a mapping");
        for key in keys(service) {
            assert!(
                known.contains(&key.as_str()),
                "service {name:?}: unknown key `{key}`"
            );
        }
        if let Some(healthcheck) = service.get("healthcheck").and_then(Value::as_mapping) {
            let known = [
                "test",
                "interval",
                "timeout",
                "retries",
                "start_period",
                "start_interval",
                "disable",
            ];
            for key in keys(healthcheck) {
                assert!(
                    known.contains(&key.as_str()),
                    "service {name:?}: unknown healthcheck key `{key}`"
                );
            }
        }
    }
}

#[test]
fn every_image_is_pinned_to_a_tag() {
    for (name, service) in services() {
        let image = service
            .get("image")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("service {name:?} has no image"));
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

#[test]
fn the_standard_ports_are_published() {
    for (name, port) in [("postgres", 5432), ("redis", 6379), ("kafka", 9092)] {
        assert!(
            published_ports(&service(name)).contains(&port),
            "{name} must publish host port {port}, which the defaults of \
             TEST_DATABASE_URL / REDIS_URL / KAFKA_BROKERS name"
        );
    }
}

#[test]
fn every_service_has_a_healthcheck() {
    for (name, service) in services() {
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

#[test]
fn data_lives_in_declared_named_volumes() {
    let declared = compose()
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(keys)
        .unwrap_or_default();
    for (name, service) in services() {
        let volumes: Vec<String> = service
            .get("volumes")
            .and_then(Value::as_sequence)
            .unwrap_or_else(|| panic!("service {name:?} has no volume"))
            .iter()
            .map(scalar)
            .collect();
        for volume in &volumes {
            let source = volume.split(':').next().unwrap_or_default();
            assert!(
                !source.starts_with(['.', '/', '~']),
                "service {name:?}: {volume} is a bind mount, not a named volume"
            );
            assert!(
                declared.contains(source),
                "service {name:?}: volume `{source}` is not declared under top-level volumes"
            );
        }
    }
}

#[test]
fn postgres_and_redis_are_the_expected_versions_and_credentials() {
    let postgres = service("postgres");
    assert_eq!(env_var(&postgres, "POSTGRES_PASSWORD"), "postgres");
    let image = postgres.get("image").and_then(Value::as_str).unwrap();
    assert!(image.starts_with("postgres:16"), "{image}");
    let redis = service("redis");
    let image = redis.get("image").and_then(Value::as_str).unwrap();
    assert!(image.starts_with("redis:7"), "{image}");
}

#[test]
fn kafka_runs_in_kraft_mode_with_listeners_that_fit_together() {
    let kafka = service("kafka");
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
    let text = compose_text();
    let header: String = text
        .lines()
        .take_while(|line| line.starts_with('#') || line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "DATABASE_URL",
        "TEST_DATABASE_URL",
        "REDIS_URL",
        "KAFKA_BROKERS",
        "cargo xtask up",
        "postgres://postgres:postgres@127.0.0.1:5432/postgres",
        "redis://127.0.0.1:6379",
        "127.0.0.1:9092",
    ] {
        assert!(
            header.contains(needle),
            "the header comment should name {needle}"
        );
    }
}
