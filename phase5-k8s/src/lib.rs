//! # FerrisEats phase 5 — Kubernetes
//!
//! The platform of phase 4 as a cluster would run it: one image
//! (`docker/Dockerfile`), a compose file for the whole stack (`compose.yaml`), and
//! Kubernetes manifests as a kustomize base with overlays (`deploy/`). No cluster
//! runs where this workshop is built, so the manifests are proven without one:
//!
//! | concern | where |
//! |---|---|
//! | rendering an overlay: `kubectl kustomize`, or a pinned `kustomize` | [`render`] |
//! | validating every object against the Kubernetes schemas, unknown fields refused | [`validate`] |
//! | the policy rules (in the spirit of kube-linter): limits, probes, non-root, PDBs, HPAs, selectors, termination, scaling within partitions | [`policy`] |
//! | the behaviour the manifests cause, rehearsed with real processes: cgroups, probes, restarts, a Service, rolling updates, autoscaling | [`rehearse`] |

pub mod policy;
pub mod rehearse;
pub mod render;

pub use render::{render, validate};
