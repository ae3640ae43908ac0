//! `kiln plan` / `kiln apply`: realize the built artifacts on a cluster.
//!
//! build (as `kiln build`) -> desired objects from the artifacts ([`desired`]) -> secrets resolved
//! in memory ([`secrets`]) -> the ApplySet parent and one LIST per group-kind ([`cluster`]) ->
//! a plan, as a value ([`plan`]) -> apply: parent first (group-kinds widened), then waves in DAG
//! order, kinds in order inside a wave, CRDs waited on, health gates ([`health`]), prune in
//! reverse order, parent narrowed last.

pub mod applyset;
pub mod cluster;
pub mod desired;
pub mod health;
pub mod lock;
pub mod plan;
pub mod secrets;

mod run;

pub use run::{
    apply, connect_and_plan, connect_for_destroy, destroy, ApplyOptions, ApplyReport, PlanOptions,
    RealizeError, Realized, Target,
};
