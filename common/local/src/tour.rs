//! Checked tours: the commands a README shows, run for real, their output compared
//! with what the README says a learner will see.
//!
//! In the spirit of Dapr's checked quickstarts and of `trycmd`, but for a README whose
//! commands talk to a running service (`curl`, `jq`, `grep` in a log). A tour is every
//! ```` ```console ```` block of a markdown file, in order:
//!
//! ````markdown
//! ```console
//! $ cargo run -p phase1-monolith -- --payment-latency 0 > phase1.log 2>&1 &
//! $ curl -s localhost:3000/menu | jq -c '.[0]'
//! {"sku":"burger-classic","name":"Classic Burger","price_cents":1090}
//! ```
//! ````
//!
//! * `$ ` starts a command (a line ending in `\` continues it); the lines after it, up
//!   to the next command, are its expected output (stdout and stderr together).
//! * In expected output, `[..]` matches anything within a line and a line `...`
//!   matches any number of lines (the conventions of `trycmd`/`snapbox`).
//! * A command ending in `&` is a service: started in the background, awaited until
//!   every port of the tour listens, stopped (its whole process group) when the tour
//!   ends.
//! * `cargo run -p NAME [--]` runs the already built binary NAME (so a test does not
//!   build inside a build), with the same arguments.
//!
//! Every command runs with `bash -o pipefail -c` in the tour's own directory. The
//! well-known ports (3000, 3001, …) are moved to free ones: the services get them from
//! the environment variables their flags read (`LISTEN_ADDR`, …) and the commands'
//! `localhost:3000` is rewritten; in the output, the free ports are written back, so
//! what is compared is what the README shows.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One command of a tour and what it should print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line of the command in the markdown file.
    pub line: usize,
    pub command: String,
    pub expected: Vec<String>,
}

impl Step {
    pub fn is_service(&self) -> bool {
        self.command.trim_end().ends_with('&') && !self.command.trim_end().ends_with("&&")
    }
}

/// The steps of every ```` ```console ```` block of `markdown`, in order.
pub fn parse(markdown: &str) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    for (first, block) in fenced_blocks(markdown, "console") {
        let mut continuing = false;
        for (i, line) in block.lines().enumerate() {
            let trimmed = line.trim_end();
            if continuing {
                let step = steps.last_mut().expect("a command is being continued");
                step.command.push('\n');
                step.command.push_str(trimmed);
                continuing = trimmed.ends_with('\\');
            } else if let Some(command) = trimmed.strip_prefix("$ ") {
                steps.push(Step {
                    line: first + i,
                    command: command.to_owned(),
                    expected: Vec::new(),
                });
                continuing = command.ends_with('\\');
            } else if let Some(step) = steps.last_mut() {
                step.expected.push(trimmed.to_owned());
            }
        }
    }
    steps
}

/// Every ```` ```INFO ```` block of `markdown` (`info` such as `console` or `bash`),
/// in order: the 1-based line of its first line, and its text.
pub fn fenced_blocks(markdown: &str, info: &str) -> Vec<(usize, String)> {
    let opening = format!("```{info}");
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim();
        match &mut current {
            None if trimmed == opening => current = Some((n + 2, String::new())),
            Some(_) if trimmed.starts_with("```") => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// Whether `actual` is what `expected` describes (`[..]` within a line, `...` for
/// any lines). The error shows both, with the first line that differs.
pub fn check(expected: &[String], actual: &str) -> Result<(), String> {
    let actual: Vec<&str> = actual.lines().map(str::trim_end).collect();
    let expected: Vec<&str> = expected.iter().map(|l| l.trim_end()).collect();
    if lines_match(&expected, &actual) {
        return Ok(());
    }
    Err(format!(
        "expected:\n{}\nactual:\n{}",
        indent(&expected),
        indent(&actual)
    ))
}

fn indent(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((&"...", rest)) => (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..])),
        Some((line, rest)) => actual
            .split_first()
            .is_some_and(|(first, others)| line_matches(line, first) && lines_match(rest, others)),
    }
}

/// One line against a pattern where `[..]` matches any text.
pub fn line_matches(pattern: &str, line: &str) -> bool {
    let mut parts = pattern.split("[..]");
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last) && rest.len() >= last.len()
}

/// Runs the steps of a tour, one after the other.
#[derive(Debug)]
pub struct Tour {
    dir: PathBuf,
    env: Vec<(String, String)>,
    /// Well-known port → the free port used instead.
    ports: BTreeMap<u16, u16>,
    /// Package name → its built binary.
    binaries: BTreeMap<String, PathBuf>,
    /// Text of the README → the text used instead (a database of the test's own).
    substitutions: Vec<(String, String)>,
    services: Vec<Child>,
    /// How long one command may take.
    pub timeout: Duration,
}

impl Tour {
    /// A tour run in `dir` (created if missing).
    pub fn new(dir: &Path) -> anyhow::Result<Tour> {
        std::fs::create_dir_all(dir)?;
        Ok(Tour {
            dir: dir.to_owned(),
            env: Vec::new(),
            ports: BTreeMap::new(),
            binaries: BTreeMap::new(),
            substitutions: Vec::new(),
            services: Vec::new(),
            timeout: Duration::from_secs(60),
        })
    }

    /// `cargo run -p NAME` runs `binary`.
    pub fn binary(mut self, name: &str, binary: &Path) -> Self {
        self.binaries.insert(name.to_owned(), binary.to_owned());
        self
    }

    /// `readme` in a command is run as `actual` (and `actual` in the output is shown
    /// as `readme`): a database or a key prefix of the test's own.
    pub fn substitute(mut self, readme: &str, actual: &str) -> Self {
        self.substitutions
            .push((readme.to_owned(), actual.to_owned()));
        self
    }

    /// An environment variable for every command.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Moves `well_known` to a free port; `variable` (e.g. `LISTEN_ADDR`) tells the
    /// services where it went.
    pub fn port(mut self, well_known: u16, variable: &str) -> anyhow::Result<Self> {
        let free = crate::local_kafka::cluster::free_port()?;
        self.ports.insert(well_known, free);
        self.env
            .push((variable.to_owned(), format!("127.0.0.1:{free}")));
        Ok(self)
    }

    /// `well_known` is at `actual` (the service was told some other way, e.g. a port
    /// offset); the tour waits for it like the others.
    pub fn shifted_port(mut self, well_known: u16, actual: u16) -> Self {
        self.ports.insert(well_known, actual);
        self
    }

    /// The free port standing in for `well_known`.
    pub fn port_of(&self, well_known: u16) -> Option<u16> {
        self.ports.get(&well_known).copied()
    }

    /// The command as it is run: binaries for `cargo run`, free ports for well-known.
    pub fn rewrite(&self, command: &str) -> String {
        let mut command = self.cargo_run(command);
        for (readme, actual) in &self.substitutions {
            command = command.replace(readme, actual);
        }
        for (well_known, free) in &self.ports {
            for host in ["localhost", "127.0.0.1"] {
                command =
                    command.replace(&format!("{host}:{well_known}"), &format!("{host}:{free}"));
            }
        }
        command
    }

    /// Each `cargo run [-q|--quiet|--release] -p NAME [--]` of a known NAME becomes
    /// the binary's path; its arguments follow as they were.
    fn cargo_run(&self, command: &str) -> String {
        let mut out = String::new();
        let mut rest = command;
        while let Some(at) = rest.find("cargo run ") {
            out.push_str(&rest[..at]);
            let mut words = rest[at..].split(' ').skip(2).peekable();
            let mut used = "cargo run ".len();
            let mut binary = None;
            while let Some(word) = words.next() {
                match word {
                    "-q" | "--quiet" | "--release" => used += word.len() + 1,
                    "-p" => {
                        let name = words.next().unwrap_or_default();
                        binary = self.binaries.get(name);
                        used += "-p ".len() + name.len();
                        if words.peek() == Some(&"--") {
                            used += " --".len();
                        }
                        break;
                    }
                    _ => break,
                }
            }
            match binary {
                Some(binary) => {
                    out.push_str(&binary.display().to_string());
                    rest = &rest[at + used.min(rest.len() - at)..];
                }
                None => {
                    out.push_str("cargo run ");
                    rest = &rest[at + "cargo run ".len()..];
                }
            }
        }
        out.push_str(rest);
        out
    }

    fn unrewrite(&self, output: &str) -> String {
        let mut output = output.to_owned();
        for (readme, actual) in &self.substitutions {
            output = output.replace(actual, readme);
        }
        for (well_known, free) in &self.ports {
            output = output.replace(&format!(":{free}"), &format!(":{well_known}"));
        }
        output
    }

    fn bash(&self, command: &str) -> Command {
        let mut bash = Command::new("bash");
        bash.args(["-o", "pipefail", "-c", command])
            .current_dir(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        bash
    }

    /// Runs one step: a service is started and awaited; a command must finish within
    /// [`Tour::timeout`], succeed, and print what the step expects. `Ok` holds what
    /// it printed (nothing for a service), well-known ports written back.
    pub fn run(&mut self, step: &Step) -> Result<String, String> {
        let command = self.rewrite(&step.command);
        let at = format!("line {}: `{}`", step.line, step.command);
        if step.is_service() {
            let command = command.trim_end().trim_end_matches('&');
            let child = process_group(self.bash(&format!("exec {command}")))
                .spawn()
                .map_err(|e| format!("{at}: {e}"))?;
            self.services.push(child);
            return self
                .wait_for_ports()
                .map(|()| String::new())
                .map_err(|e| format!("{at}: {e}"));
        }
        let mut child = process_group(self.bash(&format!("{command} 2>&1")))
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{at}: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().map_err(|e| format!("{at}: {e}"))? {
                break status;
            }
            if Instant::now() > deadline {
                crate::process::stop_tree(&mut child);
                return Err(format!("{at}: still running after {:?}", self.timeout));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut output = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut output);
        }
        let output = self.unrewrite(&output);
        if !status.success() {
            return Err(format!("{at}: failed ({status}):\n{output}"));
        }
        check(&step.expected, &output)
            .map(|()| output)
            .map_err(|diff| format!("{at}: the output differs\n{diff}"))
    }

    /// Every step of `markdown`'s tour; stops at the first that fails.
    pub fn run_all(&mut self, markdown: &str) -> Result<usize, String> {
        let steps = parse(markdown);
        if steps.is_empty() {
            return Err("no ```console block: nothing to check".to_owned());
        }
        for step in &steps {
            self.run(step)?;
        }
        Ok(steps.len())
    }

    fn wait_for_ports(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for (well_known, free) in &self.ports {
            while TcpStream::connect(("127.0.0.1", *free)).is_err() {
                if let Some(child) = self.services.last_mut()
                    && let Some(status) = child.try_wait()?
                {
                    anyhow::bail!("the service exited ({status}) before {well_known} listened");
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "nothing listens on {well_known} (moved to {free}) after 60 s"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }
}

impl Drop for Tour {
    fn drop(&mut self) {
        for child in &mut self.services {
            crate::process::stop_tree(child);
        }
    }
}

/// The child leads a process group of its own, so a terminal's Ctrl-C for the test
/// does not reach it twice.
fn process_group(mut command: Command) -> Command {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    const README: &str = "Intro\n\n```console\n$ echo hello \\\n  world\nhello world\n$ true\n```\n\n```bash\n$ not a tour\n```\n\n```console\n$ server &\n$ printf 'a\\nb\\nc\\n'\na\n...\n```\n";

    #[test]
    fn console_blocks_become_steps_with_their_expected_output() {
        let steps = parse(README);
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].line, 4);
        assert_eq!(steps[0].command, "echo hello \\\n  world");
        assert_eq!(steps[0].expected, ["hello world"]);
        assert!(steps[1].expected.is_empty());
        assert!(steps[2].is_service() && !steps[3].is_service());
        assert_eq!(steps[3].expected, ["a", "..."]);
    }

    #[test]
    fn wildcards_match_within_a_line_and_across_lines() {
        assert!(line_matches("id [..] done", "id 01a2-77 done"));
        assert!(line_matches("[..]", "anything"));
        assert!(line_matches("x[..]y[..]z", "x1y2z"));
        assert!(!line_matches("id [..] done", "id 01a2-77 gone"));
        assert!(!line_matches("exact", "exact plus"));
        let expected = |lines: &[&str]| lines.iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert!(check(&expected(&["a", "...", "d"]), "a\nb\nc\nd\n").is_ok());
        assert!(check(&expected(&["a", "..."]), "a\n").is_ok());
        assert!(check(&expected(&["a", "d"]), "a\nb\nd\n").is_err());
        let diff = check(&expected(&["paid"]), "cancelled\n").unwrap_err();
        assert!(diff.contains("expected:\n    paid") && diff.contains("actual:\n    cancelled"));
    }

    #[test]
    fn a_tour_runs_its_commands_and_fails_on_different_output() {
        let dir = std::env::temp_dir().join(format!("ferriseats-tour-{}", std::process::id()));
        let mut tour = Tour::new(&dir).unwrap().env("GREETING", "hello");
        let ok = "```console\n$ echo \"$GREETING\" > f && cat f\nhello\n$ printf 'x\\ny\\n' | head -1\nx\n```\n";
        assert_eq!(tour.run_all(ok), Ok(2));
        let wrong = "```console\n$ echo bye\nhello\n```\n";
        let err = tour.run_all(wrong).unwrap_err();
        assert!(
            err.contains("line 2: `echo bye`") && err.contains("bye"),
            "{err}"
        );
        let failing = "```console\n$ false | cat\n```\n";
        assert!(tour.run_all(failing).unwrap_err().contains("failed"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commands_reach_moved_ports_and_cargo_run_uses_the_built_binary() {
        let tour = Tour::new(&std::env::temp_dir())
            .unwrap()
            .binary("phase1-monolith", Path::new("/t/phase1-monolith"))
            .port(3000, "LISTEN_ADDR")
            .unwrap();
        let free = tour.port_of(3000).unwrap();
        assert_eq!(
            tour.rewrite("cargo run -p phase1-monolith -- --x 1 & curl localhost:3000/menu"),
            format!("/t/phase1-monolith --x 1 & curl localhost:{free}/menu")
        );
        assert_eq!(
            tour.rewrite("cargo run -p phase1-monolith"),
            "/t/phase1-monolith"
        );
        assert_eq!(
            tour.rewrite("T=$(cargo run -q -p phase1-monolith -- token) && cargo run -p other"),
            "T=$(/t/phase1-monolith token) && cargo run -p other"
        );
        assert_eq!(
            tour.rewrite("cargo run --release -p phase1-monolith > log &"),
            "/t/phase1-monolith > log &"
        );
        assert_eq!(
            tour.unrewrite(&format!("http://127.0.0.1:{free}/x")),
            "http://127.0.0.1:3000/x"
        );
    }
}
