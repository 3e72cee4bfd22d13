//! The commands the READMEs show outside their checked tours still exist.
//!
//! A tour (```` ```console ````) is run for real by each phase's `tests/tour.rs`. The
//! ```` ```bash ```` blocks around it are reference — several terminals, a crash in
//! the middle, ten minutes of load — and are not run. What rots in them first is a
//! renamed subcommand or flag, so every `cargo run -p PACKAGE -- ARGS` and
//! `cargo xtask ARGS` in them is given to the built binary with `--help` appended:
//! clap answers help only when everything before it parses, and refuses an unknown
//! subcommand or flag. Every block must also be valid bash (`bash -n`).

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

fn root() -> PathBuf {
    support::workspace_root()
}

fn readmes() -> Vec<PathBuf> {
    support::readmes(&root())
}

/// Shell words of one command line, quotes removed; stops at a comment or at the
/// first operator (`|`, `&&`, `;`, `>`, `&`, `<`). `None` when a word has a `$` (its
/// value is only known when the shell runs it).
fn words(command: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        '$' => return None,
                        c => word.push(c),
                    }
                }
            }
            '$' => return None,
            '#' if !in_word => break,
            '|' | ';' | '>' | '<' | '&' => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// The program and arguments a `cargo run -p PACKAGE [cargo flags] [-- ARGS]` or
/// `cargo xtask ARGS` stands for.
fn invocation(words: &[String]) -> Option<(String, Vec<String>)> {
    let start = words.iter().position(|w| w == "cargo")?;
    let words = &words[start + 1..];
    // What follows a second `--` goes to another program (nextest, a test filter):
    // `--help` must not reach it.
    let before_dashes = |args: &[String]| -> Vec<String> {
        args.iter().take_while(|a| *a != "--").cloned().collect()
    };
    match words.first().map(String::as_str) {
        // `cargo xtask bench ARGS` and `chaos ARGS` build phase 4 in release mode and
        // pass ARGS on: check them where they land.
        Some("xtask") if words.get(1).is_some_and(|w| w == "bench") => Some((
            "phase4-chaos".into(),
            [vec!["bench".into()], words[2..].to_vec()].concat(),
        )),
        Some("xtask") if words.get(1).is_some_and(|w| w == "chaos") => Some((
            "phase4-chaos".into(),
            [vec!["scenario".into()], words[2..].to_vec()].concat(),
        )),
        Some("xtask") => Some(("xtask".into(), before_dashes(&words[1..]))),
        Some("run") => {
            let package = words
                .iter()
                .position(|w| w == "-p")
                .map(|i| words[i + 1].clone())?;
            let args = match words.iter().position(|w| w == "--") {
                Some(i) => before_dashes(&words[i + 1..]),
                None => Vec::new(),
            };
            Some((package, args))
        }
        _ => None,
    }
}

/// Lines of a block with `\`-continuations joined, each command of `a && b` apart.
fn commands(block: &str) -> Vec<String> {
    block
        .replace("\\\n", " ")
        .lines()
        .flat_map(|line| line.split("&&").map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn binary(name: &str) -> PathBuf {
    // target/debug/deps/readme_commands-… → target/debug/NAME
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join(name)
}

/// `bin ARGS --help`: Ok when clap answers with help, at once. A program still
/// running after 10 s did not take `--help` as help (it went on to do the work) and is
/// stopped.
fn help(bin: &Path, args: &[String]) -> Result<(), String> {
    let mut child = Command::new(bin)
        .args(args)
        .arg("--help")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| err.to_string())?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().map_err(|err| err.to_string())? {
            if status.success() {
                return Ok(());
            }
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).ok();
            return Err(stderr.lines().next().unwrap_or_default().to_owned());
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("still running 10 s after `--help`: it does not stop at --help".into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn shell_words_stop_at_operators_and_skip_variables() {
    assert_eq!(
        words("cargo run -p tui -- --phase4 --once | head # note").unwrap(),
        ["cargo", "run", "-p", "tui", "--", "--phase4", "--once"]
    );
    assert_eq!(
        words(r#"cargo run -p x -- load --slo 'p99<200ms' --slo "errors<0.1%" > f"#).unwrap(),
        [
            "cargo",
            "run",
            "-p",
            "x",
            "--",
            "load",
            "--slo",
            "p99<200ms",
            "--slo",
            "errors<0.1%"
        ]
    );
    assert_eq!(words("cargo run -p x -- token --customer $USER"), None);
    let (program, args) =
        invocation(&words("cargo run --release -p phase4-chaos -- gameday --seed 42").unwrap())
            .unwrap();
    assert_eq!(
        (program.as_str(), args),
        (
            "phase4-chaos",
            vec!["gameday".to_owned(), "--seed".into(), "42".into()]
        )
    );
}

#[test]
fn the_check_refuses_a_flag_the_binary_does_not_have() {
    let xtask = binary("xtask");
    assert!(
        xtask.exists(),
        "{} is built with the tests",
        xtask.display()
    );
    let known = Command::new(&xtask)
        .args(["footprint", "--phase", "2", "--help"])
        .output()
        .unwrap();
    assert!(known.status.success());
    let unknown = Command::new(&xtask)
        .args(["footprint", "--no-such-flag", "--help"])
        .output()
        .unwrap();
    assert!(
        !unknown.status.success(),
        "clap must refuse before it answers --help"
    );
}

#[test]
fn every_command_the_readmes_show_still_parses_and_every_block_is_bash() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for readme in readmes() {
        let text = std::fs::read_to_string(&readme).unwrap();
        let name = readme.strip_prefix(root()).unwrap().display().to_string();
        for (line, block) in common_local::tour::fenced_blocks(&text, "bash") {
            let syntax = Command::new("bash")
                .args(["-n", "-c", &block])
                .output()
                .unwrap();
            if !syntax.status.success() {
                failures.push(format!(
                    "{name}:{line}: not valid bash: {}",
                    String::from_utf8_lossy(&syntax.stderr).trim()
                ));
            }
            for command in commands(&block) {
                let Some((program, args)) = words(&command).as_deref().and_then(invocation) else {
                    continue;
                };
                let bin = binary(&program);
                if !bin.exists() {
                    failures.push(format!(
                        "{name}:{line}: `{}`: no binary {program} (built with the tests?)",
                        command.trim()
                    ));
                    continue;
                }
                checked += 1;
                if let Err(error) = help(&bin, &args) {
                    failures.push(format!(
                        "{name}:{line}: `{}` no longer parses: {error}",
                        command.trim()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        checked >= 30,
        "only {checked} commands found in the READMEs' bash blocks"
    );
    println!("{checked} README commands parse");
}
