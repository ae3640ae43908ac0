//! kiln-realize: `kiln plan`, `kiln apply` and `kiln destroy` on a cluster.
//!
//! built artifacts -> desired objects ([`desired`], [`Wanted`]) -> scopes settled from
//! discovery and secrets resolved in memory ([`secrets`]) -> the set's lock ([`lock`]), the
//! ApplySet parent and one LIST per group-kind -> a plan, as a value ([`plan`]) -> apply
//! ([`applying`]): parent first (group-kinds widened), then waves in DAG order, kinds in order
//! inside a wave, CRDs waited on, health gates ([`health`], [`wait`]), prune in reverse order,
//! parent narrowed last.
//!
//! Every cluster operation goes through the [`ClusterApi`] trait: [`KubeCluster`] is the real
//! one (kube, tokio); unit tests inject faults with a fake.

pub mod api;
pub mod applying;
pub mod applyset;
pub mod connection;
pub mod desired;
pub mod diff;
pub mod drift;
pub mod dry_run;
pub mod error;
pub mod export;
pub mod fence;
pub mod health;
pub mod kube_cluster;
pub mod kube_leases;
pub mod lock;
pub mod members;
pub mod ownership;
pub mod plan;
pub mod planning;
pub mod pods;
pub mod quantity;
pub mod render;
pub mod secrets;
pub mod wait;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
pub(crate) mod fake_leases;

pub use api::{ApplyParams, ClusterApi, ClusterError, RequestCounts};
pub use applying::{
    apply, apply_reporting, destroy, ApplyEvent, ApplyOptions, ApplyReport, Written,
};
pub use error::RealizeError;
pub use kube_cluster::KubeCluster;
pub use planning::{plan_set, plan_teardown, Built, PlanOptions, Realized, Wanted};
