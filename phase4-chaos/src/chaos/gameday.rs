//! A game day: one fault, chosen at random among the scenarios, injected under load
//! without saying which. The learners watch the dashboard, diagnose, and answer:
//!
//! ```text
//! phase4-chaos gameday --seed 42            # terminal 1: the platform, the load, one fault
//! cargo run -p tui -- --phase4              # terminal 2: what the learners look at
//! phase4-chaos gameday --answer latency     # terminal 3: right or wrong, and how long it took
//! ```
//!
//! The answer is sealed in `.ferriseats/gameday.json`: a SHA-256 of a random salt and
//! the scenario's name, so a glance at the file does not give it away (five names are
//! easy to try by hand: this is a workshop, not a vault). The run's report, with the
//! fault named, is written once the run ends, in `.ferriseats/runs/<time>-gameday/`.

use super::Scenario;
use anyhow::Context;
use clap::ValueEnum;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// `phase4-chaos gameday`.
#[derive(Debug, Clone, clap::Args)]
pub struct GamedayArgs {
    /// Fixes which fault, and when.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Your diagnosis: the scenario you think it was (instead of running one).
    #[arg(long, value_enum)]
    pub answer: Option<Scenario>,
    /// Requests per second of the default mix.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// How long the load runs: long enough to look around.
    #[arg(long, default_value = "180s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Where the sealed answer is kept.
    #[arg(long, default_value = ".ferriseats/gameday.json")]
    pub record: PathBuf,
}

/// What `gameday.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub seed: u64,
    salt: String,
    /// SHA-256 of the salt and the scenario's name, hex.
    sealed: String,
    /// When the fault was injected (RFC 3339); absent until then.
    pub fault_at: Option<String>,
    /// Answers given so far.
    pub answers: Vec<String>,
}

fn seal(salt: &str, scenario: Scenario) -> String {
    let digest = Sha256::digest(format!("{salt}:{}", scenario.name()));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Record {
    /// A new game: the scenario `seed` picks, sealed.
    pub fn new(seed: u64) -> (Record, Scenario) {
        let mut rng = StdRng::seed_from_u64(seed);
        let all = Scenario::value_variants();
        let scenario = all[rng.random_range(0..all.len())];
        let salt = uuid::Uuid::now_v7().simple().to_string();
        let record = Record {
            seed,
            sealed: seal(&salt, scenario),
            salt,
            fault_at: None,
            answers: Vec::new(),
        };
        (record, scenario)
    }

    pub fn is(&self, scenario: Scenario) -> bool {
        seal(&self.salt, scenario) == self.sealed
    }

    pub fn load(path: &Path) -> anyhow::Result<Record> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "no game day under way ({} is missing): start one with `phase4-chaos gameday --seed N`",
                path.display()
            )
        })?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// `gameday --answer NAME`: right or wrong, and how long after the fault. `Ok(true)`
/// when right.
pub fn answer(path: &Path, guess: Scenario) -> anyhow::Result<bool> {
    let mut record = Record::load(path)?;
    let Some(fault_at) = record.fault_at.clone() else {
        println!("no fault yet: keep watching the dashboard");
        return Ok(false);
    };
    let since = common::db::parse_timestamp(&fault_at)
        .map(|at| (common::db::now() - at).as_seconds_f64())
        .unwrap_or(f64::NAN);
    record.answers.push(guess.name().to_owned());
    record.save(path)?;
    let right = record.is(guess);
    if right {
        println!(
            "right: it was {} — diagnosed {since:.0} s after the fault, at answer {}",
            guess.name(),
            record.answers.len()
        );
    } else {
        println!(
            "not {} ({} answer(s) so far, {since:.0} s since the fault): look again",
            guess.name(),
            record.answers.len()
        );
    }
    Ok(right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_picks_the_scenario_and_only_its_name_opens_the_seal() {
        let (record, scenario) = Record::new(42);
        assert_eq!(Record::new(42).1, scenario, "the same seed, the same fault");
        assert!(record.is(scenario));
        for other in Scenario::value_variants()
            .iter()
            .filter(|s| **s != scenario)
        {
            assert!(!record.is(*other));
        }
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains(scenario.name()), "sealed: {text}");
        let picked: std::collections::BTreeSet<_> =
            (0..40).map(|seed| Record::new(seed).1.name()).collect();
        assert!(picked.len() > 2, "seeds pick different faults: {picked:?}");
    }

    #[test]
    fn an_answer_is_judged_against_the_seal_and_timed_from_the_fault() {
        let path = std::env::temp_dir().join(format!(
            "ferriseats-gameday-{}.json",
            uuid::Uuid::now_v7().simple()
        ));
        let (mut record, scenario) = Record::new(7);
        record.save(&path).unwrap();
        assert!(!answer(&path, scenario).unwrap(), "no fault yet");
        record.fault_at = Some(common::db::timestamp(common::db::now()));
        record.save(&path).unwrap();
        let wrong = *Scenario::value_variants()
            .iter()
            .find(|s| **s != scenario)
            .unwrap();
        assert!(!answer(&path, wrong).unwrap());
        assert!(answer(&path, scenario).unwrap());
        assert_eq!(Record::load(&path).unwrap().answers.len(), 2);
        std::fs::remove_file(&path).unwrap();
    }
}
