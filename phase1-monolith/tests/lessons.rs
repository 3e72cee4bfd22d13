//! The README's "See each lesson" commands, run as a learner runs them: with the
//! provider as the workshop ships it (slow, flaky, declining some cards), so their
//! output differs from run to run and cannot be compared line by line as the tour's
//! is. Instead each block runs as written, must succeed, and must show what the
//! README's prose says it shows (four charges without keys, a 422 for a reused key
//! with another body, the breaker open, orders stuck in `placed` after the kill and
//! all settled after the restart).
//!
//! How a block becomes runnable — the only liberties taken with the text:
//! * a `cargo run -p phase1-monolith …` line is a service: ` | tee phase1.log` becomes
//!   `> phase1.log 2>&1 &` (the log is read back, not shown); a block that starts
//!   services first stops the ones before it (a learner's Ctrl-C);
//! * the rest of the block runs as one bash script (its variables and loops intact);
//! * ports 3000/3001 move to free ones, and `pkill -f '… --payment-url'` is narrowed
//!   to this test's own process (the suite runs others like it at the same time).

use common_local::tour::{Step, Tour};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECTION: &str = "## See each lesson";

/// The ```bash blocks of the section: (line of the first command, text).
fn lesson_blocks(readme: &str) -> Vec<(usize, String)> {
    let start = readme.find(SECTION).expect("the README's lessons section");
    let first_line = readme[..start].lines().count() + 1;
    let section = &readme[start..];
    let end = section[SECTION.len()..]
        .find("\n## ")
        .map_or(section.len(), |at| at + SECTION.len());
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in section[..end].lines().enumerate() {
        match &mut current {
            None if line.trim() == "```bash" => current = Some((first_line + n + 1, String::new())),
            Some(_) if line.trim() == "```" => blocks.push(current.take().unwrap()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

/// A block split into the services it starts and the script that follows.
fn split(block: &str) -> (Vec<String>, String) {
    let joined = block.replace("\\\n", " ");
    let mut services = Vec::new();
    let mut script = String::new();
    for line in joined.lines() {
        if line
            .trim_start()
            .starts_with("cargo run -p phase1-monolith")
        {
            let command = line.split(" #").next().unwrap().trim_end();
            let command = command.trim_end_matches("| tee phase1.log").trim_end();
            let log = if command.contains(" provider") {
                "provider.log"
            } else {
                "phase1.log"
            };
            services.push(format!("{command} > {log} 2>&1 &"));
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    (services, script)
}

struct Lessons {
    dir: PathBuf,
    tour: Option<Tour>,
}

impl Lessons {
    fn fresh_tour(&mut self) -> Tour {
        drop(self.tour.take()); // stops the services of the block before
        let mut tour = Tour::new(&self.dir).unwrap().binary(
            "phase1-monolith",
            Path::new(env!("CARGO_BIN_EXE_phase1-monolith")),
        );
        tour.timeout = Duration::from_secs(90);
        tour
    }

    /// Starts `services` (stopping those before), each awaited on its port.
    fn start(&mut self, line: usize, services: &[String]) {
        let mut tour = self.fresh_tour().port(3001, "PROVIDER_ADDR").unwrap();
        let alone = services.len() == 1;
        if alone {
            tour = tour.port(3000, "LISTEN_ADDR").unwrap();
        }
        for service in services {
            if !alone && !service.contains(" provider") {
                tour = tour.port(3000, "LISTEN_ADDR").unwrap();
            }
            run(&mut tour, line, service);
        }
        // Narrow the README's pkill to this test's API (its port is this test's own);
        // `[p]` keeps the pattern from matching the shell that runs it.
        let narrowed = "[p]hase1-monolith --payment-url http://127.0.0.1:3001'";
        tour = tour.substitute("phase1-monolith --payment-url'", narrowed);
        self.tour = Some(tour);
    }

    fn run(&mut self, line: usize, command: &str) {
        run(
            self.tour.as_mut().expect("a service started before"),
            line,
            command,
        );
    }
}

/// Runs one command (a service is started and awaited); a failure panics with the
/// README line.
fn run(tour: &mut Tour, line: usize, command: &str) {
    let step = Step {
        line,
        command: command.to_owned(),
        expected: vec!["...".to_owned()],
    };
    if let Err(failure) = tour.run(&step) {
        panic!("README.md's lesson at line {line} does not run — {failure}");
    }
}

/// Runs `script` (a block's commands) and returns what it printed, failing with the
/// README line when it does not succeed.
fn output(lessons: &mut Lessons, line: usize, script: &str) -> String {
    let tour = lessons.tour.as_mut().expect("a service started before");
    let file = "lesson.out";
    let command = format!("{{\n{script}\n}} > {file} 2>&1");
    let step = Step {
        line,
        command,
        expected: Vec::new(),
    };
    if let Err(failure) = tour.run(&step) {
        let printed = std::fs::read_to_string(lessons.dir.join(file)).unwrap_or_default();
        panic!("README.md's lesson at line {line} failed — {failure}\nit printed:\n{printed}");
    }
    std::fs::read_to_string(lessons.dir.join(file)).unwrap()
}

#[test]
fn each_lesson_runs_as_written_and_shows_what_the_readme_says() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = lesson_blocks(&readme);
    assert_eq!(
        blocks.len(),
        7,
        "the lessons section has {} bash blocks; give a new one its claim here",
        blocks.len()
    );
    let dir =
        std::env::temp_dir().join(format!("ferriseats-phase1-lessons-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut lessons = Lessons {
        dir: dir.clone(),
        tour: None,
    };
    // What the prose after each block says the learner sees.
    let claims: [&[&str]; 7] = [
        &[],                                                            // start the app
        &["\"message\":\"request finished\""], // a paid order's trail, by its request id
        &["|"],                                // the order row, already stored
        &["\"charges\": 4"],                   // retries without keys: four charges
        &["\"status\": 422"],                  // Idempotency-Key reused with another body
        &["\"payment_breaker\": \"open\"", "\"status\": \"degraded\""], // the breaker
        &["placed|"],                          // kill -9: orders stuck in doubt
    ];
    for ((line, block), claim) in blocks.iter().zip(claims) {
        let (services, script) = split(block);
        if !services.is_empty() {
            lessons.start(*line, &services);
        }
        if script.trim().is_empty() {
            continue;
        }
        let printed = output(&mut lessons, *line, &script);
        for expected in claim {
            assert!(
                printed.contains(expected),
                "README.md's lesson at line {line}: the prose promises {expected:?}, the commands printed:\n{printed}"
            );
        }
    }
    // "Restart terminal 2: … pass after pass settles the orders in doubt … until every
    // order is paid or cancelled."
    let (line, block) = blocks.last().unwrap();
    let (services, _) = split(block);
    let api = services
        .iter()
        .find(|s| s.contains("--payment-url"))
        .unwrap();
    lessons.run(*line, api);
    // One provider call of 2–5 s per order in doubt, one at a time: about two minutes.
    lessons.tour.as_mut().unwrap().timeout = Duration::from_secs(300);
    let settled = output(
        &mut lessons,
        *line,
        "until [ -z \"$(sqlite3 ferriseats-phase1.db \"select 1 from orders where status = 'placed' limit 1\")\" ]; do sleep 1; done\n\
         sqlite3 ferriseats-phase1.db \"select status, count(*) from orders group by status\"",
    );
    assert!(!settled.contains("placed"), "{settled}");
    drop(lessons);
    let _ = std::fs::remove_dir_all(&dir);
}
