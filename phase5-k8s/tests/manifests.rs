//! The manifests, proven without a cluster: the base and every overlay render with
//! kustomize; every object validates against the Kubernetes schemas with unknown
//! fields refused; the base and the `kind` overlay break no policy rule; and each
//! misconfiguration overlay breaks exactly the rule it is about — so each rule is
//! seen failing, and nothing else fails with it.
//!
//! Needs kustomize (`kubectl kustomize`, or `KUSTOMIZE`) and `kubernetes-validate`
//! (`KUBERNETES_VALIDATE`): `cargo xtask test` provides both.

use phase5_k8s::policy::{self, Rule};
use std::path::PathBuf;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// Renders `path`, validates it strictly, and returns the rules it breaks.
fn rules_broken(path: &str) -> (Vec<policy::Object>, Vec<Rule>, Vec<policy::Finding>) {
    let yaml = phase5_k8s::render(&deploy(path)).unwrap_or_else(|err| panic!("{path}: {err:#}"));
    let validation = phase5_k8s::validate(&yaml).unwrap_or_else(|err| panic!("{err:#}"));
    assert!(
        validation.errors.is_empty(),
        "{path} renders objects the Kubernetes schemas refuse: {:#?}",
        validation.errors
    );
    let objects = policy::parse(&yaml).unwrap();
    let findings = policy::check(&objects);
    (objects, policy::broken(&findings), findings)
}

#[test]
fn the_base_renders_validates_and_breaks_no_rule() {
    let (objects, broken, findings) = rules_broken("base");
    assert!(broken.is_empty(), "{findings:#?}");
    let kinds = |kind: &str| objects.iter().filter(|o| o.kind == kind).count();
    assert_eq!(kinds("StatefulSet"), 3, "PostgreSQL, Kafka, Redis");
    assert_eq!(
        kinds("Deployment"),
        8,
        "provider, order, gateway, four consumers, relay"
    );
    assert_eq!(
        kinds("HorizontalPodAutoscaler"),
        2,
        "gateway and order on CPU"
    );
    assert_eq!(kinds("ScaledObject"), 4, "the consumers on lag");
    assert!(kinds("PodDisruptionBudget") >= 3);
    // Phase 3's dashboard and alerts, as they are in phase 3 (not a copy that drifts).
    let config_map = |prefix: &str| {
        objects
            .iter()
            .find(|o| o.kind == "ConfigMap" && o.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("a ConfigMap {prefix}…"))
    };
    let phase3 = |path: &str| {
        std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../phase3-observability/deploy")
                .join(path),
        )
        .unwrap()
    };
    let dashboards = config_map("ferriseats-dashboards");
    assert_eq!(
        dashboards.value["data"]["ferriseats.json"].as_str(),
        Some(phase3("grafana/dashboards/ferriseats.json").as_str())
    );
    assert_eq!(
        dashboards.value["metadata"]["labels"]["grafana_dashboard"],
        "1"
    );
    assert_eq!(
        config_map("ferriseats-alerts").value["data"]["alerts.yml"].as_str(),
        Some(phase3("prometheus/alerts.yml").as_str())
    );
}

#[test]
fn the_kind_overlay_breaks_no_rule_and_publishes_the_gateway() {
    let (objects, broken, findings) = rules_broken("overlays/kind");
    assert!(broken.is_empty(), "{findings:#?}");
    let gateway = objects
        .iter()
        .find(|o| o.kind == "Service" && o.name == "gateway")
        .expect("the gateway's Service");
    assert_eq!(gateway.value["spec"]["type"], "NodePort");
}

#[test]
fn each_misconfiguration_breaks_exactly_its_rule() {
    let cases = [
        ("cpu-starved", Rule::CpuFloor),
        ("memory-tight", Rule::MemoryFloor),
        ("liveness-on-database", Rule::LivenessIndependent),
        ("readiness-checks-nothing", Rule::ReadinessReal),
        ("no-prestop", Rule::GracefulTermination),
        ("consumers-over-partitions", Rule::ScaleWithinPartitions),
    ];
    for (overlay, rule) in cases {
        let path = format!("overlays/misconfig/{overlay}");
        let (_, broken, findings) = rules_broken(&path);
        assert_eq!(broken, [rule], "{overlay}: {findings:#?}");
        assert!(
            deploy(&path).join("README.md").is_file(),
            "{overlay} says what breaks and how to see it"
        );
    }
    // Every overlay in the folder is one of the cases.
    let overlays = std::fs::read_dir(deploy("overlays/misconfig"))
        .unwrap()
        .count();
    assert_eq!(overlays, cases.len());
}

#[test]
fn a_typo_is_refused_by_the_schemas_not_silently_dropped() {
    let yaml = phase5_k8s::render(&deploy("base")).unwrap();
    let typo = yaml.replacen("  minReplicas: 2", "  minReplicaz: 2", 1);
    assert_ne!(typo, yaml);
    let validation = phase5_k8s::validate(&typo).unwrap();
    assert!(
        validation.errors.iter().any(|e| e.contains("minReplicaz")),
        "minReplicaz is not a field: {validation:?}"
    );
}
