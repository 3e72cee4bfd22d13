//! `phase3-observability/compose.yaml`, checked without Docker (like
//! `tests/compose.rs` does for phase 2's file).
//!
//! Phase 3's compose file adds Prometheus, Grafana and Jaeger to phase 2's stack,
//! which it *includes* rather than copies. What is checked by reading it: it parses;
//! the included file exists; no key is misspelt; every image is pinned; every bind
//! mount points at something that exists in the repository (a missing path would
//! be created by Docker as an empty directory, and Prometheus would start without
//! its configuration); the configuration Prometheus is told to read is in the
//! mounted directory; no published host port collides with the services' own ports
//! (the APIs on 3000–3002, the metrics on 9400–9406) or with phase 2's
//! infrastructure; and the header says how to use it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use yaml_serde::{Mapping, Value};

fn phase3_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phase3-observability")
}

fn compose_path() -> PathBuf {
    phase3_dir().join("compose.yaml")
}

fn compose_text() -> String {
    let path = compose_path();
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
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

fn compose() -> Mapping {
    parse(&compose_path())
}

fn services_of(top: &Mapping) -> Mapping {
    top.get("services")
        .and_then(Value::as_mapping)
        .expect("a `services` mapping")
        .clone()
}

fn services() -> Mapping {
    services_of(&compose())
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

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("not a scalar: {other:?}"),
    }
}

/// The paths of the `include:` entries (short form `- FILE` or long form `- path:`),
/// resolved against the directory of compose.yaml.
fn included_files() -> Vec<PathBuf> {
    let include = compose()
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
        .map(|path| phase3_dir().join(path))
        .collect()
}

/// Host ports published by every service of a compose file.
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

/// The bind mounts (`./SOURCE:TARGET[:ro]`) of a service: (source, target).
fn bind_mounts(service: &Mapping) -> Vec<(String, String)> {
    service
        .get("volumes")
        .and_then(Value::as_sequence)
        .map(|volumes| {
            volumes
                .iter()
                .map(scalar)
                .filter(|v| v.starts_with(['.', '/']))
                .map(|v| {
                    let mut parts = v.split(':');
                    let source = parts.next().unwrap_or_default().to_owned();
                    let target = parts.next().unwrap_or_default().to_owned();
                    (source, target)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn it_includes_phase_2_instead_of_copying_it() {
    let included = included_files();
    let phase2 = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../phase2-events/compose.yaml");
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
    let own = keys(&services());
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
fn only_known_top_level_keys() {
    let known = [
        "name", "include", "services", "volumes", "networks", "configs", "secrets",
    ];
    for key in keys(&compose()) {
        assert!(
            known.contains(&key.as_str()) || key.starts_with("x-"),
            "unknown top-level key `{key}` (known: {known:?}, or x-…)"
        );
    }
}

#[test]
fn the_observability_services_are_there_with_known_keys() {
    let known = [
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
        "extra_hosts",
        "user",
        "labels",
        "profiles",
    ];
    let services = services();
    for name in ["prometheus", "grafana", "jaeger"] {
        assert!(
            services.contains_key(name),
            "compose.yaml has no service `{name}`"
        );
    }
    for (name, service) in &services {
        let service = service.as_mapping().expect("a service is a mapping");
        for key in keys(service) {
            assert!(
                known.contains(&key.as_str()),
                "service {name:?}: unknown key `{key}`"
            );
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
fn every_bind_mount_exists_in_the_repository() {
    let mut mounts = 0;
    for (name, service) in services() {
        let service = service.as_mapping().unwrap();
        for (source, _) in bind_mounts(service) {
            assert!(
                !source.starts_with('/'),
                "service {name:?}: {source} is an absolute path; mount from the repository"
            );
            let path = phase3_dir().join(&source);
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
    // Named volumes must be declared.
    let declared = compose()
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(keys)
        .unwrap_or_default();
    for (name, service) in services() {
        for volume in service
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .map(scalar)
            .filter(|v| !v.starts_with(['.', '/']))
        {
            let source = volume.split(':').next().unwrap_or_default();
            assert!(
                declared.contains(source),
                "service {name:?}: volume `{source}` is not declared under top-level volumes"
            );
        }
    }
}

#[test]
fn prometheus_reads_a_config_that_is_mounted_and_scrapes_the_host() {
    let prometheus = service("prometheus");
    let command: Vec<String> = prometheus
        .get("command")
        .and_then(Value::as_sequence)
        .expect("prometheus has a command list")
        .iter()
        .map(scalar)
        .collect();
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
                .map(|rest| phase3_dir().join(source).join(rest))
        })
        .unwrap_or_else(|| panic!("{config} is not inside a bind mount of the prometheus service"));
    let text =
        std::fs::read_to_string(&local).unwrap_or_else(|err| panic!("{}: {err}", local.display()));
    assert!(
        text.contains("host.docker.internal:94"),
        "{} should scrape the services on the host (host.docker.internal)",
        local.display()
    );
    let extra_hosts: Vec<String> = prometheus
        .get("extra_hosts")
        .and_then(Value::as_sequence)
        .expect("prometheus needs extra_hosts to reach the host on Linux")
        .iter()
        .map(scalar)
        .collect();
    assert!(
        extra_hosts.contains(&"host.docker.internal:host-gateway".to_owned()),
        "{extra_hosts:?}"
    );
}

#[test]
fn grafana_gets_its_provisioning_and_dashboards() {
    let grafana = service("grafana");
    let mounts = bind_mounts(&grafana);
    let target_of = |target: &str| {
        mounts
            .iter()
            .find(|(_, t)| t == target)
            .map(|(source, _)| phase3_dir().join(source))
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
    let own = published_ports(&services());
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
    let text = compose_text();
    let header: String = text
        .lines()
        .take_while(|line| line.starts_with('#') || line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    for needle in [
        "docker compose -f phase3-observability/compose.yaml up -d --wait",
        "DATABASE_URL",
        "REDIS_URL",
        "KAFKA_BROKERS",
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318",
        "cargo xtask up --observability",
        "http://127.0.0.1:9090",
        "http://127.0.0.1:3030",
        "http://127.0.0.1:16686",
    ] {
        assert!(
            header.contains(needle),
            "the header comment should name {needle}"
        );
    }
}
