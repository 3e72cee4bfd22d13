//! CPU and memory limits the way a kubelet sets them: a Linux control group per
//! container, and a handful of files in it.
//!
//! | manifest | cgroup v1 | cgroup v2 |
//! |---|---|---|
//! | `limits.cpu: 500m` | `cpu.cfs_quota_us = 50000` per `cpu.cfs_period_us = 100000` | `cpu.max = "50000 100000"` |
//! | `limits.memory: 256Mi` | `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`: no swap) | `memory.max` (and `memory.swap.max = 0`) |
//! | throttling | `cpu.stat`: `nr_periods`, `nr_throttled`, `throttled_time` (ns) | `cpu.stat`: `nr_periods`, `nr_throttled`, `throttled_usec` |
//! | CPU used | `cpuacct.usage` (ns) | `cpu.stat`: `usage_usec` |
//! | OOM kills | `memory.oom_control`: `oom_kill` | `memory.events`: `oom_kill` |
//!
//! A CPU limit is a *quota*, not a share: in every 100 ms period the group may run
//! `limit · 100 ms` of CPU time across all its threads, and once that is spent every
//! thread waits for the next period — "throttled". A memory limit is a wall: the
//! allocation that crosses it makes the kernel kill a process of the group
//! (SIGKILL, so exit status 137), which Kubernetes reports as `OOMKilled`.
//!
//! A process joins a group by writing its pid into the group's `cgroup.procs`; the
//! rehearsal starts each container through `sh -c 'echo $$ > …/cgroup.procs; exec …'`,
//! so the program is inside its limits from its first instruction (and keeps the pid).
//! Writing these files needs root (or a delegated hierarchy).

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The directory every rehearsal's groups are made under.
const PARENT: &str = "ferriseats-rehearsal";
/// The CFS period Kubernetes uses (and the kernel's default).
pub const CFS_PERIOD: Duration = Duration::from_millis(100);

/// Which cgroup hierarchy the machine mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hierarchy {
    /// One directory per controller.
    V1 {
        cpu: PathBuf,
        cpuacct: PathBuf,
        memory: PathBuf,
    },
    /// One unified tree.
    V2 { root: PathBuf },
}

impl Hierarchy {
    fn detect(root: &Path) -> anyhow::Result<Hierarchy> {
        if root.join("cgroup.controllers").exists() {
            return Ok(Hierarchy::V2 {
                root: root.to_owned(),
            });
        }
        let controller = |name: &str| {
            let dir = root.join(name);
            anyhow::ensure!(
                dir.is_dir(),
                "no cgroup v1 `{name}` controller at {}: the rehearsal sets CPU and memory \
                 limits through Linux cgroups (v1 or v2), and this machine mounts neither",
                dir.display()
            );
            Ok(dir)
        };
        Ok(Hierarchy::V1 {
            cpu: controller("cpu")?,
            cpuacct: controller("cpuacct")?,
            memory: controller("memory")?,
        })
    }

    fn version(&self) -> u8 {
        match self {
            Hierarchy::V1 { .. } => 1,
            Hierarchy::V2 { .. } => 2,
        }
    }
}

/// The limits of one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// What a group has used so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    /// CPU time used by all its processes, in microseconds.
    pub cpu_usec: u64,
    /// CFS periods in which it ran, and those in which it was throttled.
    pub periods: u64,
    pub throttled_periods: u64,
    /// Time its threads spent throttled, in microseconds.
    pub throttled_usec: u64,
    /// The most memory it held at once (v2 without `memory.peak`: what it holds now).
    pub memory_peak_bytes: u64,
    /// Processes the kernel killed for crossing the memory limit.
    pub oom_kills: u64,
}

impl Usage {
    /// The share of CFS periods in which the group was throttled.
    pub fn throttled_ratio(&self) -> f64 {
        if self.periods == 0 {
            0.0
        } else {
            self.throttled_periods as f64 / self.periods as f64
        }
    }

    /// What was used between `earlier` and `self` (peaks and OOM kills as of now).
    pub fn since(&self, earlier: &Usage) -> Usage {
        Usage {
            cpu_usec: self.cpu_usec.saturating_sub(earlier.cpu_usec),
            periods: self.periods.saturating_sub(earlier.periods),
            throttled_periods: self
                .throttled_periods
                .saturating_sub(earlier.throttled_periods),
            throttled_usec: self.throttled_usec.saturating_sub(earlier.throttled_usec),
            memory_peak_bytes: self.memory_peak_bytes,
            oom_kills: self.oom_kills.saturating_sub(earlier.oom_kills),
        }
    }
}

/// One container's control group; removed on drop (once its processes are gone).
#[derive(Debug)]
pub struct Cgroup {
    hierarchy: Hierarchy,
    /// The group's directory in each hierarchy it lives in.
    dirs: Vec<PathBuf>,
}

/// Reads `key value` lines (`cpu.stat`, `memory.oom_control`, `memory.events`).
fn field(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
        .unwrap_or(0)
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    std::fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Cgroup {
    /// Checks that this machine lets the rehearsal make groups, with a message that
    /// says what to do where it does not.
    pub fn check() -> anyhow::Result<u8> {
        let hierarchy = Hierarchy::detect(Path::new("/sys/fs/cgroup"))?;
        let probe = Cgroup::create(&format!("check-{}", std::process::id()), Limits::default())?;
        drop(probe);
        Ok(hierarchy.version())
    }

    /// A group named `name` with `limits`, under `/sys/fs/cgroup/…/ferriseats-rehearsal/`.
    pub fn create(name: &str, limits: Limits) -> anyhow::Result<Cgroup> {
        let hierarchy = Hierarchy::detect(Path::new("/sys/fs/cgroup"))?;
        let explain = |dir: &Path, err: std::io::Error| {
            anyhow::anyhow!(
                "cannot create the control group {}: {err}. The rehearsal limits each \
                 container's CPU and memory with Linux cgroups, as a kubelet does; it needs \
                 root (sudo) on a machine whose /sys/fs/cgroup is writable (not an \
                 unprivileged container)",
                dir.display()
            )
        };
        let make = |dir: &Path| -> anyhow::Result<()> {
            match std::fs::create_dir(dir) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                Err(err) => Err(explain(dir, err)),
            }
        };
        let dirs = match &hierarchy {
            Hierarchy::V1 {
                cpu,
                cpuacct,
                memory,
            } => {
                let dirs: Vec<PathBuf> = [cpu, cpuacct, memory]
                    .iter()
                    .map(|root| root.join(PARENT).join(name))
                    .collect();
                for dir in &dirs {
                    make(dir.parent().expect("under the parent"))?;
                    make(dir)?;
                }
                let quota = limits
                    .cpu_millis
                    .map_or(-1, |m| (m as i64) * CFS_PERIOD.as_micros() as i64 / 1000);
                write(
                    &dirs[0].join("cpu.cfs_period_us"),
                    &CFS_PERIOD.as_micros().to_string(),
                )?;
                write(&dirs[0].join("cpu.cfs_quota_us"), &quota.to_string())?;
                if let Some(bytes) = limits.memory_bytes {
                    write(&dirs[2].join("memory.limit_in_bytes"), &bytes.to_string())?;
                    let memsw = dirs[2].join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &bytes.to_string())?;
                    }
                }
                dirs
            }
            Hierarchy::V2 { root } => {
                let parent = root.join(PARENT);
                make(&parent)?;
                // The controllers must be handed down to the groups below.
                write(&root.join("cgroup.subtree_control"), "+cpu +memory")?;
                write(&parent.join("cgroup.subtree_control"), "+cpu +memory")?;
                let dir = parent.join(name);
                make(&dir)?;
                let quota = limits.cpu_millis.map_or("max".to_owned(), |m| {
                    (m * CFS_PERIOD.as_micros() as u64 / 1000).to_string()
                });
                write(
                    &dir.join("cpu.max"),
                    &format!("{quota} {}", CFS_PERIOD.as_micros()),
                )?;
                if let Some(bytes) = limits.memory_bytes {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                }
                vec![dir]
            }
        };
        Ok(Cgroup { hierarchy, dirs })
    }

    /// The shell line that moves the shell into this group before it `exec`s the
    /// program (`$0`) with its arguments (`$@`).
    pub fn exec_line(&self) -> String {
        let mut line = String::new();
        for dir in &self.dirs {
            line.push_str(&format!(
                "echo $$ > '{}' && ",
                dir.join("cgroup.procs").display()
            ));
        }
        line.push_str("exec \"$0\" \"$@\"");
        line
    }

    /// What the group has used so far.
    pub fn usage(&self) -> Usage {
        match &self.hierarchy {
            Hierarchy::V1 { .. } => {
                let cpu = read(&self.dirs[0].join("cpu.stat"));
                let memory = &self.dirs[2];
                Usage {
                    cpu_usec: read(&self.dirs[1].join("cpuacct.usage"))
                        .trim()
                        .parse::<u64>()
                        .unwrap_or(0)
                        / 1000,
                    periods: field(&cpu, "nr_periods"),
                    throttled_periods: field(&cpu, "nr_throttled"),
                    throttled_usec: field(&cpu, "throttled_time") / 1000,
                    memory_peak_bytes: read(&memory.join("memory.max_usage_in_bytes"))
                        .trim()
                        .parse()
                        .unwrap_or(0),
                    oom_kills: field(&read(&memory.join("memory.oom_control")), "oom_kill"),
                }
            }
            Hierarchy::V2 { .. } => {
                let dir = &self.dirs[0];
                let cpu = read(&dir.join("cpu.stat"));
                let peak = read(&dir.join("memory.peak"));
                let peak = if peak.is_empty() {
                    read(&dir.join("memory.current"))
                } else {
                    peak
                };
                Usage {
                    cpu_usec: field(&cpu, "usage_usec"),
                    periods: field(&cpu, "nr_periods"),
                    throttled_periods: field(&cpu, "nr_throttled"),
                    throttled_usec: field(&cpu, "throttled_usec"),
                    memory_peak_bytes: peak.trim().parse().unwrap_or(0),
                    oom_kills: field(&read(&dir.join("memory.events")), "oom_kill"),
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            // A group still holding a process cannot go; the pod kills its process
            // before it drops the group, and a leftover is harmless (and empty).
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_files_are_read_by_key() {
        let v1 = "nr_periods 120\nnr_throttled 90\nthrottled_time 8000000000\n";
        assert_eq!(field(v1, "nr_throttled"), 90);
        assert_eq!(field(v1, "throttled_time"), 8_000_000_000);
        assert_eq!(field(v1, "missing"), 0);
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(field(oom, "oom_kill"), 2, "not oom_kill_disable");
    }

    #[test]
    fn usage_since_an_earlier_reading_subtracts_the_counters() {
        let earlier = Usage {
            cpu_usec: 100,
            periods: 10,
            throttled_periods: 1,
            throttled_usec: 5,
            memory_peak_bytes: 1,
            oom_kills: 1,
        };
        let now = Usage {
            cpu_usec: 300,
            periods: 30,
            throttled_periods: 16,
            throttled_usec: 50,
            memory_peak_bytes: 9,
            oom_kills: 3,
        };
        let d = now.since(&earlier);
        assert_eq!((d.cpu_usec, d.periods, d.throttled_periods), (200, 20, 15));
        assert_eq!((d.memory_peak_bytes, d.oom_kills), (9, 2));
        assert!((d.throttled_ratio() - 0.75).abs() < 1e-9);
    }

    #[test]
    fn a_missing_hierarchy_is_named() {
        let empty = std::env::temp_dir().join(format!("no-cgroups-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        let err = Hierarchy::detect(&empty).unwrap_err().to_string();
        assert!(err.contains("cgroup"), "{err}");
        std::fs::remove_dir_all(&empty).unwrap();
    }
}
