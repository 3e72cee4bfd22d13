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
use std::path::Path;
use std::time::Duration;

const SECTION: &str = "## See each lesson";

/// The ```bash blocks of the section: (line of the first command, text).
fn lesson_blocks(readme: &str) -> Vec<(usize, String)> {
    let line_of = |at: usize| readme[..at].lines().count() + 1;
    let start = readme.find(SECTION).expect("the README's lessons section");
    let end = readme[start + SECTION.len()..]
        .find("\n## ")
        .map_or(readme.len(), |at| start + SECTION.len() + at);
    let lines = line_of(start)..line_of(end);
    common_local::tour::fenced_blocks(readme, "bash")
        .into_iter()
        .filter(|(line, _)| lines.contains(line))
        .collect()
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

/// A tour in `dir` running `services` (the tour before, and its services, stopped
/// first: a learner's Ctrl-C), each awaited on its port.
fn start(dir: &Path, before: Option<Tour>, line: usize, services: &[String]) -> Tour {
    drop(before);
    let mut tour = Tour::new(dir)
        .unwrap()
        .binary(
            "phase1-monolith",
            Path::new(env!("CARGO_BIN_EXE_phase1-monolith")),
        )
        .port(3001, "PROVIDER_ADDR")
        .unwrap();
    tour.timeout = Duration::from_secs(90);
    for service in services {
        // The API listens on 3000 (and, without --payment-url, its provider on 3001);
        // a provider alone only on 3001.
        if !service.contains(" provider") && tour.port_of(3000).is_none() {
            tour = tour.port(3000, "LISTEN_ADDR").unwrap();
        }
        run(&mut tour, line, service);
    }
    // Narrow the README's pkill to this test's API (its port is this test's own);
    // `[p]` keeps the pattern from matching the shell that runs it.
    let narrowed = "[p]hase1-monolith --payment-url http://127.0.0.1:3001'";
    tour.substitute("phase1-monolith --payment-url'", narrowed)
}

/// Runs `command` (a service is started and awaited; a script must succeed) and
/// returns what it printed; a failure panics with the README line.
fn run(tour: &mut Tour, line: usize, command: &str) -> String {
    let step = Step {
        line,
        command: command.to_owned(),
        expected: vec!["...".to_owned()],
    };
    tour.run(&step).unwrap_or_else(|failure| {
        panic!("README.md's lesson at line {line} does not run — {failure}")
    })
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
    let mut tour: Option<Tour> = None;
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
            tour = Some(start(&dir, tour.take(), *line, &services));
        }
        if script.trim().is_empty() {
            continue;
        }
        let app = tour.as_mut().expect("the lessons start the app first");
        let printed = run(app, *line, &script);
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
    let app = tour.as_mut().unwrap();
    run(app, *line, api);
    // One provider call of 2–5 s per order in doubt, one at a time: about two minutes.
    app.timeout = Duration::from_secs(300);
    let settled = run(
        app,
        *line,
        "until [ -z \"$(sqlite3 ferriseats-phase1.db \"select 1 from orders where status = 'placed' limit 1\")\" ]; do sleep 1; done\n\
         sqlite3 ferriseats-phase1.db \"select status, count(*) from orders group by status\"",
    );
    assert!(!settled.contains("placed"), "{settled}");
    drop(tour);
    let _ = std::fs::remove_dir_all(&dir);
}
