//! Rendering an overlay and validating what it renders, with the tools a platform
//! team would use: kustomize (through `kubectl kustomize`, or the `kustomize` binary
//! `cargo xtask test` builds with `go install` where kubectl is missing) and
//! `kubernetes-validate --strict` (PyPI), which checks every object against the
//! OpenAPI schemas of a Kubernetes version and refuses fields they do not know —
//! the `replicaz` a typed client would silently drop.

use anyhow::{Context, bail};
use common_local::process;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The Kubernetes version the manifests are validated against: `preStop.sleep`
/// (no shell needed in the container) is GA from 1.34.
pub const KUBERNETES_VERSION: &str = "1.34.0";

/// How long a render or a validation may take.
const LIMIT: Duration = Duration::from_secs(120);

/// The kustomize to run: `KUSTOMIZE` (a binary) if set, else `kubectl kustomize`,
/// else the one `cargo xtask test` built, else `kustomize` on the PATH.
fn kustomize() -> anyhow::Result<Command> {
    if let Some(binary) = std::env::var_os("KUSTOMIZE").filter(|v| !v.is_empty()) {
        let mut cmd = Command::new(binary);
        cmd.arg("build");
        return Ok(cmd);
    }
    if process::on_path("kubectl") {
        let mut cmd = Command::new("kubectl");
        cmd.arg("kustomize");
        return Ok(cmd);
    }
    // Where `cargo xtask test` builds it when kubectl is missing, else on the PATH.
    let built = process::workspace_root().join(".ferriseats/go-bin/kustomize");
    let binary = if built.is_file() {
        built
    } else if process::on_path("kustomize") {
        PathBuf::from("kustomize")
    } else {
        bail!(
            "neither kubectl nor kustomize is installed: `cargo xtask test` builds a pinned \
             kustomize (go install) and sets KUSTOMIZE, or install kubectl"
        )
    };
    let mut cmd = Command::new(binary);
    cmd.arg("build");
    Ok(cmd)
}

/// The YAML `dir` (a kustomization) renders to. Files outside the kustomization may
/// be read (the base's ConfigMaps take phase 3's dashboard and alerts from where
/// phase 3 keeps them, rather than from a copy that would drift).
pub fn render(dir: &Path) -> anyhow::Result<String> {
    let mut cmd = kustomize()?;
    cmd.args(["--load-restrictor", "LoadRestrictionsNone"])
        .arg(dir);
    let out = process::output(&mut cmd, LIMIT)?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            process::display(&cmd),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).context("kustomize wrote something that is not UTF-8")
}

/// `kubernetes-validate`: `KUBERNETES_VALIDATE` if set, else the one `cargo xtask
/// test` installed (`.ferriseats/phase5-venv`), else on the PATH.
fn validator() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBERNETES_VALIDATE").filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let installed =
        process::workspace_root().join(".ferriseats/phase5-venv/bin/kubernetes-validate");
    if installed.is_file() {
        return installed;
    }
    PathBuf::from("kubernetes-validate")
}

/// What the schemas said of a rendering.
#[derive(Debug, Clone, Default)]
pub struct Validation {
    /// Objects refused (unknown fields, wrong types, missing required fields).
    pub errors: Vec<String>,
    /// Kinds it has no schema for (KEDA's ScaledObject: the policy rules check it).
    pub warnings: Vec<String>,
}

/// Validates `yaml` (many documents) against the schemas of [`KUBERNETES_VERSION`],
/// strictly. `Err` only when the validator could not run.
pub fn validate(yaml: &str) -> anyhow::Result<Validation> {
    let file = std::env::temp_dir().join(format!(
        "ferriseats-manifests-{}-{}.yaml",
        std::process::id(),
        yaml.len()
    ));
    std::fs::write(&file, yaml)?;
    let mut cmd = Command::new(validator());
    cmd.args(["--strict", "--quiet", "-k", KUBERNETES_VERSION])
        .arg(&file);
    let out = process::output(&mut cmd, LIMIT).context(
        "running kubernetes-validate (PyPI: `cargo xtask test` installs it in .ferriseats/phase5-venv, or set KUBERNETES_VALIDATE)",
    );
    let _ = std::fs::remove_file(&file);
    let out = out?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let (warnings, mut errors): (Vec<String>, Vec<String>) = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .partition(|l| l.starts_with("WARN"));
    if !out.status.success() && errors.is_empty() {
        errors.push(format!(
            "kubernetes-validate failed ({}) without saying why",
            out.status
        ));
    }
    Ok(Validation { errors, warnings })
}
