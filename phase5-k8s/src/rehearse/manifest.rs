//! What the rehearsal reads from the rendered manifests: for a Deployment, exactly
//! what a kubelet would act on — the container's arguments and ports, its CPU and
//! memory limits, its probes, its `preStop` pause and grace period, its rolling
//! update — and for an autoscaler, its bounds and target.

use crate::policy::{self, Object, get, number, text};
use anyhow::Context;
use std::collections::BTreeMap;
use std::time::Duration;
use yaml_serde::Value;

/// An HTTP probe, with Kubernetes' defaults for what the manifest leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub path: String,
    /// The container port it targets (a named port resolved).
    pub port: u16,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub success_threshold: u32,
}

impl Probe {
    fn of(value: &Value, ports: &BTreeMap<String, u16>) -> anyhow::Result<Probe> {
        let path = text(get(value, &["httpGet", "path"])).context("only httpGet probes")?;
        let port = text(get(value, &["httpGet", "port"])).context("a probe without a port")?;
        let port = match port.parse::<u16>() {
            Ok(number) => number,
            Err(_) => *ports
                .get(&port)
                .with_context(|| format!("a probe on port {port}, which no container names"))?,
        };
        let seconds = |key: &str, default: f64| {
            Duration::from_secs_f64(number(value.get(key)).unwrap_or(default))
        };
        let count = |key: &str, default: f64| number(value.get(key)).unwrap_or(default) as u32;
        Ok(Probe {
            path,
            port,
            initial_delay: seconds("initialDelaySeconds", 0.0),
            period: seconds("periodSeconds", 10.0),
            timeout: seconds("timeoutSeconds", 1.0),
            failure_threshold: count("failureThreshold", 3.0),
            success_threshold: count("successThreshold", 1.0),
        })
    }

    /// How long the probed endpoint must fail before the probe acts: `failureThreshold`
    /// probes, `periodSeconds` apart.
    pub fn time_to_act(&self) -> Duration {
        self.period * self.failure_threshold.saturating_sub(1) + self.timeout
    }
}

/// A Deployment's pod template, as the rehearsal runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub deployment: String,
    /// The image's arguments (its entrypoint is `phase4-chaos`, named `ferriseats`).
    pub args: Vec<String>,
    /// Container ports by name.
    pub ports: BTreeMap<String, u16>,
    pub cpu_request_millis: u64,
    pub cpu_limit_millis: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub liveness: Option<Probe>,
    pub readiness: Option<Probe>,
    /// The `preStop` sleep before SIGTERM.
    pub pre_stop: Duration,
    /// `terminationGracePeriodSeconds` (30 s when unset): from the start of the
    /// termination — `preStop` included — to SIGKILL.
    pub grace: Duration,
    /// The settings every container reads (`envFrom` ConfigMaps, `env` values).
    pub env: BTreeMap<String, String>,
    pub max_surge: u32,
    pub max_unavailable: u32,
    /// Set by the rehearsal over everything else (a database reached through a fault
    /// proxy); empty as read from the manifests.
    pub overrides: BTreeMap<String, String>,
}

impl Template {
    /// The Deployment `name` of `objects`.
    pub fn of(objects: &[Object], name: &str) -> anyhow::Result<Template> {
        let deployment = objects
            .iter()
            .find(|o| o.kind == "Deployment" && o.name == name)
            .with_context(|| format!("the manifests have no Deployment {name}"))?;
        let spec = deployment
            .pod_spec()
            .context("a Deployment without a pod spec")?;
        let container = *deployment
            .containers()
            .first()
            .with_context(|| format!("Deployment {name} has no container"))?;
        let args = container
            .get("args")
            .and_then(Value::as_sequence)
            .map(|a| a.iter().filter_map(|v| text(Some(v))).collect())
            .unwrap_or_default();
        let ports: BTreeMap<String, u16> = container
            .get("ports")
            .and_then(Value::as_sequence)
            .map(|ports| {
                ports
                    .iter()
                    .filter_map(|p| {
                        Some((text(p.get("name"))?, number(p.get("containerPort"))? as u16))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let quantity = |path: &[&str]| text(get(container, path));
        let millis = |q: Option<String>| {
            q.and_then(|q| policy::cpu_cores(&q))
                .map(|c| (c * 1000.0).round() as u64)
        };
        let probe = |key: &str| {
            container
                .get(key)
                .map(|p| Probe::of(p, &ports))
                .transpose()
                .with_context(|| format!("Deployment {name}'s {key}"))
        };
        let mut env = BTreeMap::new();
        for source in container
            .get("envFrom")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let Some(map) = text(get(source, &["configMapRef", "name"])) {
                let data = objects
                    .iter()
                    .find(|o| o.kind == "ConfigMap" && o.name == map)
                    .and_then(|o| o.get(&["data"]))
                    .and_then(Value::as_mapping)
                    .with_context(|| {
                        format!("Deployment {name} reads ConfigMap {map}, which is not rendered")
                    })?;
                for (key, value) in data {
                    if let (Some(key), Some(value)) = (text(Some(key)), text(Some(value))) {
                        env.insert(key, value);
                    }
                }
            }
        }
        for var in container
            .get("env")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            if let (Some(key), Some(value)) = (text(var.get("name")), text(var.get("value"))) {
                env.insert(key, value);
            }
        }
        let rolling = |key: &str| {
            number(deployment.get(&["spec", "strategy", "rollingUpdate", key])).map(|n| n as u32)
        };
        Ok(Template {
            deployment: name.to_owned(),
            args,
            cpu_request_millis: millis(quantity(&["resources", "requests", "cpu"])).unwrap_or(0),
            cpu_limit_millis: millis(quantity(&["resources", "limits", "cpu"])),
            memory_limit_bytes: quantity(&["resources", "limits", "memory"])
                .and_then(|q| policy::memory_bytes(&q))
                .map(|b| b as u64),
            liveness: probe("livenessProbe")?,
            readiness: probe("readinessProbe")?,
            pre_stop: Duration::from_secs_f64(
                number(get(
                    container,
                    &["lifecycle", "preStop", "sleep", "seconds"],
                ))
                .unwrap_or(0.0),
            ),
            grace: Duration::from_secs_f64(
                number(get(spec, &["terminationGracePeriodSeconds"])).unwrap_or(30.0),
            ),
            ports,
            env,
            max_surge: rolling("maxSurge").unwrap_or(1),
            max_unavailable: rolling("maxUnavailable").unwrap_or(0),
            overrides: BTreeMap::new(),
        })
    }

    /// The container port `name` (`http`, `ops`).
    pub fn port(&self, name: &str) -> anyhow::Result<u16> {
        self.ports
            .get(name)
            .copied()
            .with_context(|| format!("{} has no port named {name}", self.deployment))
    }
}

/// What scales a Deployment: an HPA on CPU, or a KEDA ScaledObject on a consumer
/// group's lag.
#[derive(Debug, Clone, PartialEq)]
pub enum Scaler {
    /// `desired = ceil(current · utilisation / target)`, utilisation being CPU used
    /// over CPU requested.
    Cpu {
        min: u32,
        max: u32,
        target_percent: f64,
    },
    /// `desired = ceil(lag / lag_threshold)` (KEDA's Kafka scaler, an HPA on an
    /// external metric with an `AverageValue` target).
    Lag {
        min: u32,
        max: u32,
        lag_threshold: f64,
        topic: String,
        group: String,
        /// KEDA's `allowIdleConsumers`: when false, it never asks for more replicas
        /// than the topic has partitions, whatever `maxReplicaCount` says.
        allow_idle: bool,
    },
}

impl Scaler {
    /// The autoscaler whose target is Deployment `name`.
    pub fn of(objects: &[Object], name: &str) -> anyhow::Result<Scaler> {
        for object in objects {
            match object.kind.as_str() {
                "HorizontalPodAutoscaler"
                    if text(object.get(&["spec", "scaleTargetRef", "name"])).as_deref()
                        == Some(name) =>
                {
                    let target = object
                        .get(&["spec", "metrics"])
                        .and_then(Value::as_sequence)
                        .into_iter()
                        .flatten()
                        .find_map(|m| number(get(m, &["resource", "target", "averageUtilization"])))
                        .context("an HPA without a CPU utilisation target")?;
                    return Ok(Scaler::Cpu {
                        min: number(object.get(&["spec", "minReplicas"])).unwrap_or(1.0) as u32,
                        max: number(object.get(&["spec", "maxReplicas"]))
                            .context("an HPA without maxReplicas")?
                            as u32,
                        target_percent: target,
                    });
                }
                "ScaledObject"
                    if text(object.get(&["spec", "scaleTargetRef", "name"])).as_deref()
                        == Some(name) =>
                {
                    let trigger = object
                        .get(&["spec", "triggers"])
                        .and_then(Value::as_sequence)
                        .and_then(|t| t.first())
                        .context("a ScaledObject without a trigger")?;
                    let meta = |key: &str| text(get(trigger, &["metadata", key]));
                    return Ok(Scaler::Lag {
                        min: number(object.get(&["spec", "minReplicaCount"])).unwrap_or(0.0) as u32,
                        max: number(object.get(&["spec", "maxReplicaCount"])).unwrap_or(100.0)
                            as u32,
                        lag_threshold: meta("lagThreshold")
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(10.0),
                        topic: meta("topic").context("a Kafka trigger without a topic")?,
                        group: meta("consumerGroup")
                            .context("a Kafka trigger without a consumerGroup")?,
                        allow_idle: meta("allowIdleConsumers").as_deref() == Some("true"),
                    });
                }
                _ => {}
            }
        }
        anyhow::bail!("no autoscaler targets Deployment {name}")
    }

    pub fn bounds(&self) -> (u32, u32) {
        match self {
            Scaler::Cpu { min, max, .. } | Scaler::Lag { min, max, .. } => (*min, *max),
        }
    }

    /// The HPA's formula: `ceil(current · metric / target)` for a utilisation
    /// (`metric` in percent of the request), `ceil(metric / target)` for an average
    /// value (the lag), clamped to the bounds. Within 10 % of the target nothing
    /// changes (the HPA's tolerance).
    pub fn desired(&self, current: u32, metric: f64) -> u32 {
        let (min, max) = self.bounds();
        let wanted = match self {
            Scaler::Cpu { target_percent, .. } => {
                let ratio = metric / target_percent;
                if (ratio - 1.0).abs() <= 0.1 {
                    current
                } else {
                    (f64::from(current) * ratio).ceil() as u32
                }
            }
            Scaler::Lag { lag_threshold, .. } => (metric / lag_threshold).ceil() as u32,
        };
        wanted.clamp(min.max(1), max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: settings-abc}
data: {TOPIC_PARTITIONS: "3", RUST_LOG: info}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: order}
spec:
  strategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}
  template:
    spec:
      terminationGracePeriodSeconds: 30
      containers:
        - name: order
          args: [node, order, --addr, "0.0.0.0:3000"]
          ports: [{name: http, containerPort: 3000}, {name: ops, containerPort: 9401}]
          envFrom: [{configMapRef: {name: settings-abc}}]
          env: [{name: EXTRA, value: "1"}]
          resources:
            requests: {cpu: 250m, memory: 64Mi}
            limits: {cpu: "1", memory: 256Mi}
          livenessProbe: {httpGet: {path: /health, port: ops}, periodSeconds: 10, failureThreshold: 3}
          readinessProbe: {httpGet: {path: /ready, port: 9401}, periodSeconds: 5}
          lifecycle: {preStop: {sleep: {seconds: 5}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: order}
spec:
  scaleTargetRef: {name: order}
  minReplicas: 2
  maxReplicas: 6
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}}]
"#;

    #[test]
    fn a_deployment_reads_as_a_kubelet_would_act_on_it() {
        let objects = policy::parse(DEPLOYMENT).unwrap();
        let t = Template::of(&objects, "order").unwrap();
        assert_eq!(t.args, ["node", "order", "--addr", "0.0.0.0:3000"]);
        assert_eq!(t.cpu_request_millis, 250);
        assert_eq!(t.cpu_limit_millis, Some(1000));
        assert_eq!(t.memory_limit_bytes, Some(256 * 1024 * 1024));
        let liveness = t.liveness.as_ref().unwrap();
        assert_eq!(
            (liveness.port, liveness.period),
            (9401, Duration::from_secs(10))
        );
        assert_eq!(liveness.time_to_act(), Duration::from_secs(21));
        let readiness = t.readiness.unwrap();
        assert_eq!(readiness.failure_threshold, 3, "Kubernetes' default");
        assert_eq!(t.pre_stop, Duration::from_secs(5));
        assert_eq!(t.grace, Duration::from_secs(30));
        assert_eq!(t.env["TOPIC_PARTITIONS"], "3");
        assert_eq!(t.env["EXTRA"], "1");
        assert_eq!((t.max_surge, t.max_unavailable), (1, 0));
        assert!(Template::of(&objects, "nobody").is_err());
    }

    #[test]
    fn the_hpa_formula_scales_by_the_ratio_within_its_bounds_and_tolerance() {
        let objects = policy::parse(DEPLOYMENT).unwrap();
        let hpa = Scaler::of(&objects, "order").unwrap();
        assert_eq!(
            hpa.desired(2, 140.0),
            4,
            "twice the target: twice the replicas"
        );
        assert_eq!(hpa.desired(2, 75.0), 2, "within 10 %: unchanged");
        assert_eq!(hpa.desired(4, 10.0), 2, "never below minReplicas");
        assert_eq!(hpa.desired(4, 700.0), 6, "never above maxReplicas");
        let lag = Scaler::Lag {
            min: 1,
            max: 6,
            lag_threshold: 100.0,
            topic: "orders".into(),
            group: "payment-service".into(),
            allow_idle: true,
        };
        assert_eq!(lag.desired(1, 0.0), 1);
        assert_eq!(lag.desired(1, 250.0), 3);
        assert_eq!(lag.desired(1, 5_000.0), 6);
    }
}
