//! # FerrisEats `common-local`
//!
//! What the machine a learner works on has to offer the project: the servers
//! `cargo xtask up` starts, where they listen, and how programs are run and stopped.
//! Standard library only (and `anyhow`), because xtask stands on it: on a fresh clone
//! `cargo xtask up` compiles this crate and xtask, nothing heavier, before it starts
//! anything.
//!
//! | module          | what it holds                                                         |
//! |-----------------|-----------------------------------------------------------------------|
//! | [`endpoints`]   | PostgreSQL, Redis, Kafka, Prometheus: the default address and the variable that moves each |
//! | [`local_kafka`] | Apache Kafka on this machine: the pinned version, configuration, readiness probe, test clusters |
//! | [`local_postgres`] | a PostgreSQL server of a test's own, to crash and start again |
//! | [`process`]     | commands echoed and run with deadlines, detached servers, signals, the workspace's paths |
//! | [`psql`]        | a login check and single statements through PostgreSQL's own client |
//! | [`tour`]        | the READMEs' ```` ```console ```` tours, run for real and compared with what they show |
//!
//! `common` re-exports [`endpoints`] and [`local_kafka`], so the phases reach them as
//! `common::endpoints` and `common::local_kafka`.

pub mod endpoints;
pub mod local_kafka;
pub mod local_postgres;
pub mod process;
pub mod psql;
pub mod tour;
