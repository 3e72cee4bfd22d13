//! Policy rules over rendered manifests, in the spirit of kube-linter, kube-score and
//! Polaris: what a platform engineer reviewing them for a production cluster checks
//! by eye, written down so that nobody has to. Each rule says what it protects
//! against; each of the misconfiguration overlays breaks exactly one of them, and
//! the base breaks none (`tests/manifests.rs`).
//!
//! The manifests are read as plain YAML values (not typed Kubernetes objects): the
//! schemas are `kubernetes-validate`'s job ([`crate::validate`]); these rules look
//! across objects — a Service and the pods it selects, an autoscaler and its
//! target, a budget and the replicas it guards.

use std::collections::BTreeMap;
use std::fmt;
use yaml_serde::Value;

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// Every container asks for CPU and memory and is limited in both: the scheduler
    /// places pods by their requests, the HPA computes utilisation against them, and
    /// a container without limits takes its neighbours' share.
    Resources,
    /// A CPU limit of at least 100m: below it the kernel's CFS quota throttles the
    /// process for most of every 100 ms period, and every request waits.
    CpuFloor,
    /// A memory limit of at least 64 MiB: below what a service needs at rest the
    /// kernel OOM-kills it (exit 137) and it restarts in a loop.
    MemoryFloor,
    /// A liveness probe, and not on `/ready`: readiness checks the dependencies, and
    /// a liveness probe that fails when the database is down restarts every replica
    /// at once — a restart cures nothing the database did.
    LivenessIndependent,
    /// A readiness probe, and not on `/health`: a readiness probe that checks
    /// nothing sends traffic to a replica that cannot serve it.
    ReadinessReal,
    /// Every image pinned to a tag other than `latest` (or to a digest).
    ImagePinned,
    /// Pods run as a user that is not root, and nothing may gain privileges.
    NonRoot,
    /// Everything with more than one replica has a PodDisruptionBudget, and the budget
    /// lets at least one pod go (or a node drain blocks for ever).
    DisruptionBudget,
    /// Every autoscaler's target exists, and that Deployment sets no `replicas`
    /// (each `kubectl apply` would reset what the autoscaler chose).
    AutoscalerOwnsReplicas,
    /// Every Service selects pods that exist and names ports they have; a
    /// StatefulSet's `serviceName` is a headless Service.
    SelectorsMatch,
    /// A `preStop` pause before SIGTERM (endpoints are removed asynchronously), and a
    /// grace period that covers it and the drain (`ferriseats.dev/drain-seconds`).
    GracefulTermination,
    /// No consumer scales beyond its topic's partitions (`TOPIC_PARTITIONS`): a
    /// group has at most one busy member per partition.
    ScaleWithinPartitions,
}

impl Rule {
    pub const ALL: [Rule; 12] = [
        Rule::Resources,
        Rule::CpuFloor,
        Rule::MemoryFloor,
        Rule::LivenessIndependent,
        Rule::ReadinessReal,
        Rule::ImagePinned,
        Rule::NonRoot,
        Rule::DisruptionBudget,
        Rule::AutoscalerOwnsReplicas,
        Rule::SelectorsMatch,
        Rule::GracefulTermination,
        Rule::ScaleWithinPartitions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Resources => "resources",
            Rule::CpuFloor => "cpu-floor",
            Rule::MemoryFloor => "memory-floor",
            Rule::LivenessIndependent => "liveness-independent",
            Rule::ReadinessReal => "readiness-real",
            Rule::ImagePinned => "image-pinned",
            Rule::NonRoot => "non-root",
            Rule::DisruptionBudget => "disruption-budget",
            Rule::AutoscalerOwnsReplicas => "autoscaler-owns-replicas",
            Rule::SelectorsMatch => "selectors-match",
            Rule::GracefulTermination => "graceful-termination",
            Rule::ScaleWithinPartitions => "scale-within-partitions",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rule broken by an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: Rule,
    /// `Kind/name`.
    pub object: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.rule, self.object, self.message)
    }
}

/// One rendered object.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: String,
    pub name: String,
    pub value: Value,
}

impl Object {
    fn id(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }

    pub fn get(&self, path: &[&str]) -> Option<&Value> {
        get(&self.value, path)
    }

    /// The pod template's spec, for workloads.
    pub fn pod_spec(&self) -> Option<&Value> {
        matches!(self.kind.as_str(), "Deployment" | "StatefulSet")
            .then(|| self.get(&["spec", "template", "spec"]))
            .flatten()
    }

    pub fn containers(&self) -> Vec<&Value> {
        self.pod_spec()
            .and_then(|s| get(s, &["containers"]))
            .and_then(Value::as_sequence)
            .map(|c| c.iter().collect())
            .unwrap_or_default()
    }
}

/// The value at `path` (mapping keys) under `value`.
pub fn get<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

/// A scalar as text (`3`, `"3"` and `true` alike).
pub fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A scalar as a number.
pub fn number(value: Option<&Value>) -> Option<f64> {
    text(value)?.parse().ok()
}

/// Every object of a multi-document YAML stream (empty documents skipped).
pub fn parse(yaml: &str) -> anyhow::Result<Vec<Object>> {
    use serde::Deserialize;
    let mut objects = Vec::new();
    for document in yaml_serde::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document)?;
        if value.is_null() {
            continue;
        }
        let kind = text(value.get("kind")).unwrap_or_default();
        let name = text(get(&value, &["metadata", "name"])).unwrap_or_default();
        objects.push(Object { kind, name, value });
    }
    Ok(objects)
}

/// A CPU quantity in cores: `500m`, `1`, `0.5`.
pub fn cpu_cores(quantity: &str) -> Option<f64> {
    match quantity.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => quantity.parse().ok(),
    }
}

/// A memory quantity in bytes: `64Mi`, `1Gi`, `128M`, `1000000`.
pub fn memory_bytes(quantity: &str) -> Option<f64> {
    const UNITS: [(&str, f64); 8] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (suffix, factor) in UNITS {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    quantity.parse().ok()
}

const CPU_FLOOR_CORES: f64 = 0.1;
const MEMORY_FLOOR_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// Checks every rule; the findings, in rule order.
pub fn check(objects: &[Object]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut find = |rule: Rule, object: &Object, message: String| {
        findings.push(Finding {
            rule,
            object: object.id(),
            message,
        })
    };
    let workloads: Vec<&Object> = objects.iter().filter(|o| o.pod_spec().is_some()).collect();
    let autoscalers: Vec<&Object> = objects
        .iter()
        .filter(|o| matches!(o.kind.as_str(), "HorizontalPodAutoscaler" | "ScaledObject"))
        .collect();

    for w in &workloads {
        let spec = w.pod_spec().expect("a workload");
        let pod_non_root =
            get(spec, &["securityContext", "runAsNonRoot"]) == Some(&Value::Bool(true));
        for c in w.containers() {
            let cname = text(c.get("name")).unwrap_or_default();
            // Resources.
            for (kind, resource) in [
                ("requests", "cpu"),
                ("requests", "memory"),
                ("limits", "cpu"),
                ("limits", "memory"),
            ] {
                if text(get(c, &["resources", kind, resource])).is_none() {
                    find(
                        Rule::Resources,
                        w,
                        format!("container {cname} has no {kind}.{resource}"),
                    );
                }
            }
            if let Some(cpu) =
                text(get(c, &["resources", "limits", "cpu"])).and_then(|q| cpu_cores(&q))
                && cpu < CPU_FLOOR_CORES
            {
                find(
                    Rule::CpuFloor,
                    w,
                    format!(
                        "container {cname} may use {cpu} cores: throttled most of every period (at least {CPU_FLOOR_CORES})"
                    ),
                );
            }
            if let Some(memory) =
                text(get(c, &["resources", "limits", "memory"])).and_then(|q| memory_bytes(&q))
                && memory < MEMORY_FLOOR_BYTES
            {
                find(
                    Rule::MemoryFloor,
                    w,
                    format!(
                        "container {cname} may use {:.0} MiB: less than a service needs at rest (at least 64 MiB)",
                        memory / 1024.0 / 1024.0
                    ),
                );
            }
            // Probes.
            let liveness = c.get("livenessProbe");
            let readiness = c.get("readinessProbe");
            match liveness {
                None => find(
                    Rule::LivenessIndependent,
                    w,
                    format!("container {cname} has no liveness probe"),
                ),
                Some(p) if text(get(p, &["httpGet", "path"])).as_deref() == Some("/ready") => find(
                    Rule::LivenessIndependent,
                    w,
                    format!(
                        "container {cname}'s liveness probe is /ready, which checks the dependencies: their outage would restart every replica"
                    ),
                ),
                Some(_) => {}
            }
            match readiness {
                None => find(
                    Rule::ReadinessReal,
                    w,
                    format!("container {cname} has no readiness probe"),
                ),
                Some(p) if text(get(p, &["httpGet", "path"])).as_deref() == Some("/health") => {
                    find(
                        Rule::ReadinessReal,
                        w,
                        format!(
                            "container {cname}'s readiness probe is /health, which checks nothing: traffic reaches a replica that cannot serve it"
                        ),
                    )
                }
                Some(_) => {}
            }
            // Images.
            let image = text(c.get("image")).unwrap_or_default();
            let tag = image
                .rsplit_once(':')
                .map(|(_, t)| t)
                .filter(|t| !t.contains('/'));
            if !image.contains('@') && tag.is_none_or(|t| t == "latest") {
                find(
                    Rule::ImagePinned,
                    w,
                    format!("container {cname}'s image {image:?} is not pinned to a tag"),
                );
            }
            // Privileges.
            let container_non_root =
                get(c, &["securityContext", "runAsNonRoot"]) == Some(&Value::Bool(true));
            if !pod_non_root && !container_non_root {
                find(
                    Rule::NonRoot,
                    w,
                    format!("container {cname} may run as root (runAsNonRoot is not true)"),
                );
            }
            if get(c, &["securityContext", "allowPrivilegeEscalation"]) != Some(&Value::Bool(false))
            {
                find(
                    Rule::NonRoot,
                    w,
                    format!(
                        "container {cname} may gain privileges (allowPrivilegeEscalation is not false)"
                    ),
                );
            }
        }
        // Termination (Deployments: what rolls during traffic).
        if w.kind == "Deployment" {
            let grace = number(spec.get("terminationGracePeriodSeconds")).unwrap_or(30.0);
            let drain = number(get(
                &w.value,
                &[
                    "spec",
                    "template",
                    "metadata",
                    "annotations",
                    "ferriseats.dev/drain-seconds",
                ],
            ))
            .unwrap_or(0.0);
            for c in w.containers() {
                let cname = text(c.get("name")).unwrap_or_default();
                match number(get(c, &["lifecycle", "preStop", "sleep", "seconds"])) {
                    None => find(
                        Rule::GracefulTermination,
                        w,
                        format!(
                            "container {cname} has no preStop pause: it gets SIGTERM while endpoints still route to it"
                        ),
                    ),
                    Some(pause) if grace < pause + drain => find(
                        Rule::GracefulTermination,
                        w,
                        format!(
                            "grace period {grace} s < preStop {pause} s + drain {drain} s: SIGKILL cuts the drain short"
                        ),
                    ),
                    Some(_) => {}
                }
            }
        }
    }

    // Autoscalers own the replica count.
    let mut min_replicas: BTreeMap<String, f64> = BTreeMap::new();
    for a in &autoscalers {
        let target = text(a.get(&["spec", "scaleTargetRef", "name"])).unwrap_or_default();
        let (min, max) = if a.kind == "ScaledObject" {
            (
                number(a.get(&["spec", "minReplicaCount"])).unwrap_or(0.0),
                number(a.get(&["spec", "maxReplicaCount"])).unwrap_or(100.0),
            )
        } else {
            (
                number(a.get(&["spec", "minReplicas"])).unwrap_or(1.0),
                number(a.get(&["spec", "maxReplicas"])).unwrap_or(0.0),
            )
        };
        min_replicas.insert(target.clone(), min);
        match workloads
            .iter()
            .find(|w| w.kind == "Deployment" && w.name == target)
        {
            None => find(
                Rule::AutoscalerOwnsReplicas,
                a,
                format!("scales Deployment/{target}, which does not exist"),
            ),
            Some(w) if w.get(&["spec", "replicas"]).is_some() => find(
                Rule::AutoscalerOwnsReplicas,
                a,
                format!(
                    "Deployment/{target} sets replicas: every apply resets what the autoscaler chose"
                ),
            ),
            Some(_) => {}
        }
        if a.kind == "ScaledObject" {
            let partitions = objects
                .iter()
                .filter(|o| o.kind == "ConfigMap" && o.name.starts_with("ferriseats-config"))
                .find_map(|o| number(o.get(&["data", "TOPIC_PARTITIONS"])));
            match partitions {
                Some(p) if max > p => find(
                    Rule::ScaleWithinPartitions,
                    a,
                    format!(
                        "maxReplicaCount {max} > {p} partitions: the replicas past {p} would sit idle"
                    ),
                ),
                None => find(
                    Rule::ScaleWithinPartitions,
                    a,
                    "no TOPIC_PARTITIONS in ferriseats-config to hold maxReplicaCount to"
                        .to_owned(),
                ),
                Some(_) => {}
            }
        }
    }

    // Disruption budgets.
    let budgets: Vec<&Object> = objects
        .iter()
        .filter(|o| o.kind == "PodDisruptionBudget")
        .collect();
    for w in workloads.iter().filter(|w| w.kind == "Deployment") {
        // An autoscaler's floor, where one owns the count.
        let replicas = min_replicas
            .get(&w.name)
            .copied()
            .or_else(|| number(w.get(&["spec", "replicas"])))
            .unwrap_or(1.0);
        if replicas < 2.0 {
            continue;
        }
        let labels = w.get(&["spec", "template", "metadata", "labels"]);
        let budget = budgets
            .iter()
            .find(|b| selects(b.get(&["spec", "selector", "matchLabels"]), labels));
        match budget {
            None => find(
                Rule::DisruptionBudget,
                w,
                format!("{replicas} replicas and no PodDisruptionBudget"),
            ),
            Some(b) => {
                let min_available = number(b.get(&["spec", "minAvailable"]));
                let max_unavailable = number(b.get(&["spec", "maxUnavailable"]));
                if min_available.is_some_and(|m| m >= replicas) || max_unavailable == Some(0.0) {
                    find(
                        Rule::DisruptionBudget,
                        b,
                        format!("lets no pod of {replicas} go: a node drain would block for ever"),
                    );
                }
            }
        }
    }

    // Services and the pods they select.
    for s in objects.iter().filter(|o| o.kind == "Service") {
        let selector = s.get(&["spec", "selector"]);
        let selected: Vec<&&Object> = workloads
            .iter()
            .filter(|w| selects(selector, w.get(&["spec", "template", "metadata", "labels"])))
            .collect();
        if selected.is_empty() {
            find(Rule::SelectorsMatch, s, "selects no pods".to_owned());
            continue;
        }
        let ports = s
            .get(&["spec", "ports"])
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for port in &ports {
            let Some(target) = text(port.get("targetPort")) else {
                continue;
            };
            let known = selected.iter().any(|w| {
                w.containers().iter().any(|c| {
                    c.get("ports")
                        .and_then(Value::as_sequence)
                        .is_some_and(|ps| {
                            ps.iter().any(|p| {
                                text(p.get("name")).as_deref() == Some(target.as_str())
                                    || text(p.get("containerPort")).as_deref()
                                        == Some(target.as_str())
                            })
                        })
                })
            });
            if !known {
                find(
                    Rule::SelectorsMatch,
                    s,
                    format!("targetPort {target} is not a port of the pods it selects"),
                );
            }
        }
    }
    for w in workloads.iter().filter(|w| w.kind == "StatefulSet") {
        let service = text(w.get(&["spec", "serviceName"])).unwrap_or_default();
        let headless = objects.iter().any(|o| {
            o.kind == "Service"
                && o.name == service
                && text(o.get(&["spec", "clusterIP"])).as_deref() == Some("None")
        });
        if !headless {
            find(
                Rule::SelectorsMatch,
                w,
                format!("serviceName {service:?} is not a headless Service"),
            );
        }
    }

    findings.sort_by(|a, b| a.rule.cmp(&b.rule).then(a.object.cmp(&b.object)));
    findings
}

/// Whether `selector` (matchLabels) matches `labels`: every pair present.
fn selects(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let (Some(Value::Mapping(selector)), Some(Value::Mapping(labels))) = (selector, labels) else {
        return false;
    };
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The rules broken, once each.
pub fn broken(findings: &[Finding]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = findings.iter().map(|f| f.rule).collect();
    rules.dedup();
    rules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_read_the_way_kubernetes_writes_them() {
        assert_eq!(cpu_cores("500m"), Some(0.5));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert_eq!(cpu_cores("0.25"), Some(0.25));
        assert_eq!(memory_bytes("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(memory_bytes("1Gi"), Some(1024.0 * 1024.0 * 1024.0));
        assert_eq!(memory_bytes("128M"), Some(128e6));
        assert_eq!(memory_bytes("1000"), Some(1000.0));
    }

    const POD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
        - name: web
          image: web:1.0
          ports: [{name: http, containerPort: 80}]
          resources: {requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 500m, memory: 128Mi}}
          securityContext: {allowPrivilegeEscalation: false}
          livenessProbe: {httpGet: {path: /health, port: http}}
          readinessProbe: {httpGet: {path: /ready, port: http}}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
"#;

    fn rules_broken(yaml: &str) -> Vec<Rule> {
        broken(&check(&parse(yaml).unwrap()))
    }

    #[test]
    fn a_sound_deployment_breaks_nothing() {
        assert_eq!(rules_broken(POD), []);
    }

    #[test]
    fn each_rule_fails_on_what_it_is_about() {
        let cases: [(&str, &str, Rule); 8] = [
            ("limits: {cpu: 500m,", "limits: {cpu: 5m,", Rule::CpuFloor),
            ("image: web:1.0", "image: web:latest", Rule::ImagePinned),
            ("image: web:1.0", "image: web", Rule::ImagePinned),
            (
                "securityContext: {runAsNonRoot: true}",
                "securityContext: {}",
                Rule::NonRoot,
            ),
            (
                "lifecycle: {preStop: {sleep: {seconds: 5}}}",
                "lifecycle: {}",
                Rule::GracefulTermination,
            ),
            (
                "limits: {cpu: 500m, memory: 128Mi}",
                "limits: {cpu: 500m}",
                Rule::Resources,
            ),
            (
                "limits: {cpu: 500m, memory: 128Mi}",
                "limits: {cpu: 500m, memory: 16Mi}",
                Rule::MemoryFloor,
            ),
            (
                "readinessProbe: {httpGet: {path: /ready, port: http}}",
                "readinessProbe: {httpGet: {path: /health, port: http}}",
                Rule::ReadinessReal,
            ),
        ];
        for (from, to, rule) in cases {
            assert!(POD.contains(from), "{from}");
            assert_eq!(
                rules_broken(&POD.replacen(from, to, 1)),
                [rule],
                "{from} -> {to}"
            );
        }
        let live = POD.replacen(
            "livenessProbe: {httpGet: {path: /health",
            "livenessProbe: {httpGet: {path: /ready",
            1,
        );
        assert_eq!(rules_broken(&live), [Rule::LivenessIndependent]);
    }

    #[test]
    fn objects_are_checked_against_each_other() {
        let service = "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n";
        assert_eq!(rules_broken(&format!("{POD}{service}")), []);
        assert_eq!(
            rules_broken(&format!(
                "{POD}{}",
                service.replace("app: web}", "app: other}")
            )),
            [Rule::SelectorsMatch]
        );
        assert_eq!(
            rules_broken(&format!(
                "{POD}{}",
                service.replace("targetPort: http", "targetPort: grpc")
            )),
            [Rule::SelectorsMatch]
        );
        let hpa = "---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 2\n  maxReplicas: 4\n";
        // The Deployment sets replicas: the HPA does not own them; two replicas and no budget.
        assert_eq!(
            rules_broken(&format!("{POD}{hpa}")),
            [Rule::DisruptionBudget, Rule::AutoscalerOwnsReplicas]
        );
        let owned = POD.replacen("  replicas: 1\n", "", 1);
        let pdb = "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: web}}\n";
        assert_eq!(rules_broken(&format!("{owned}{hpa}{pdb}")), []);
        assert_eq!(
            rules_broken(&format!(
                "{owned}{hpa}{}",
                pdb.replace("minAvailable: 1", "minAvailable: 2")
            )),
            [Rule::DisruptionBudget]
        );
    }
}
