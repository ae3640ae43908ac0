//! The crate's error: why planning or applying failed.

use std::time::Duration;

use crate::api::ClusterError;
use crate::desired;
use crate::lock::LockError;
use crate::secrets;

/// An object the server's dry run rejected.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("rule `{rule}`: the server rejects {object}: {message}")]
pub struct Rejection {
    /// The rule that produced it.
    pub rule: String,
    /// The object.
    pub object: String,
    /// The server's message.
    pub message: String,
}

/// An object the cluster cannot take as it is, and that this run does not make possible: its
/// namespace does not exist and no rule creates it.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("rule `{rule}`: {object}: {reason}")]
pub struct Gap {
    /// The rule that produced it.
    pub rule: String,
    /// The object.
    pub object: String,
    /// What is missing.
    pub reason: String,
}

/// An object a rule produces that another set holds.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("rule `{rule}`: {object} is a member of the set {theirs_name} (ApplySet `{theirs}`), not of this set `{ours_name}` (ApplySet `{ours}`)")]
pub struct Claimed {
    /// The rule.
    pub rule: String,
    /// The object.
    pub object: String,
    /// The other set's id.
    pub theirs: String,
    /// The other set's parent, `` `ns/kiln-<project>-<env>` `` (naming its project), when found.
    pub theirs_name: String,
    /// This set's id.
    pub ours: String,
    /// This set's parent, `ns/kiln-<project>-<env>`.
    pub ours_name: String,
}

/// Why planning or applying failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RealizeError {
    /// The server's dry run rejected objects: every one, before anything was written.
    #[error("the server rejects {} objects; nothing was written", .0.len())]
    #[diagnostic(help(
        "fix the objects in the rules named; `kiln plan` checks them the same way"
    ))]
    Rejected(#[related] Vec<Rejection>),
    /// Objects need what the cluster lacks and this run does not create: every one, before
    /// anything was written.
    #[error("{} objects need what the cluster lacks; nothing was written", .0.len())]
    #[diagnostic(help(
        "add the missing namespaces to the project (a rule that creates them), or create them first"
    ))]
    Gaps(#[related] Vec<Gap>),
    /// Objects that rules produce are members of another kiln set.
    #[error("{} objects belong to another kiln set; nothing was written", .0.len())]
    #[diagnostic(help(
        "these objects are the other set's to change. An instance made with --var shares the objects that are identical in its base set; one it changes must get its own name (make the name depend on a variable the instance overrides) or stay out of the instance (limit its rule with `envs`). --adopt instead moves them into this set: the other set stops managing them, and `kiln destroy` of this set deletes them"
    ))]
    OtherSet(#[related] Vec<Claimed>),
    /// Fields of planned objects belong to other field managers.
    #[error("{0} objects conflict with another field manager; nothing was written")]
    #[diagnostic(help(
        "the plan names the managers and fields; pass --force-conflicts to take them"
    ))]
    Conflicts(usize),
    /// The desired state is inconsistent.
    #[error(transparent)]
    Desired(#[from] desired::DesiredError),
    /// Secret references could not be resolved: every one that failed.
    #[error("{} secret references could not be resolved", .0.len())]
    Secrets(#[related] Vec<secrets::SecretError>),
    /// The cluster refused or failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// The set's lock could not be taken.
    #[error(transparent)]
    #[diagnostic(help(
        "another `kiln apply` of this set is running; wait for it, or raise --lock-timeout"
    ))]
    Lock(#[from] LockError),
    /// A lock was asked for on a cluster that cannot hold one.
    #[error("this cluster connection cannot hold the set's lock")]
    NoLock,
    /// The parent changed between this run's read and its write: another apply ran.
    #[error("the ApplySet parent Secret `{namespace}/{name}` changed while this apply ran; refusing to overwrite another run's work")]
    #[diagnostic(help("run `kiln apply` again: it plans against what the set holds now"))]
    ParentChanged {
        /// Parent name.
        name: String,
        /// Parent namespace.
        namespace: String,
    },
    /// A rule's object has a kind the cluster cannot resolve.
    #[error("rule `{rule}`: cannot resolve its object's kind")]
    Kind {
        /// The rule.
        rule: String,
        /// The cause.
        #[source]
        source: Box<ClusterError>,
    },
    /// The set's parent belongs to another tool.
    #[error("the ApplySet parent Secret `{namespace}/{name}` is managed by `{tooling}`, not kiln; refusing to touch its set")]
    ForeignParent {
        /// Parent name.
        name: String,
        /// Parent namespace.
        namespace: String,
        /// Its tooling annotation.
        tooling: String,
    },
    /// Pruning needs confirmation.
    #[error("refusing to delete {0} objects without confirmation")]
    #[diagnostic(help("pass --yes, or run on a terminal to be asked"))]
    NotConfirmed(usize),
    /// A health gate failed for good (a failed Job, a Deployment past its progress deadline).
    #[error("{object}{} failed: {condition}", of_rule(rule))]
    #[diagnostic(help(
        "objects already applied stay; fix the cause and run `kiln apply` again to converge"
    ))]
    GateFailed {
        /// The object.
        object: String,
        /// The failing condition, its reason and message.
        condition: String,
        /// The rule that produced it, once known.
        rule: Option<String>,
    },
    /// A health gate did not pass.
    #[error(
        "{object}{} did not become ready within {timeout:?}: waited for {condition}",
        of_rule(rule)
    )]
    #[diagnostic(help(
        "objects already applied stay; fix the cause and run `kiln apply` again to converge"
    ))]
    Unhealthy {
        /// The object.
        object: String,
        /// The condition.
        condition: String,
        /// The timeout.
        timeout: Duration,
        /// The rule that produced it, once known.
        rule: Option<String>,
    },
}

/// ` (rule `NAME`)` when the rule is known.
fn of_rule(rule: &Option<String>) -> String {
    rule.as_ref()
        .map(|r| format!(" (rule `{r}`)"))
        .unwrap_or_default()
}

impl RealizeError {
    /// This error with the rule that produced its object, for the health gate errors.
    pub fn in_rule(self, name: &str) -> Self {
        match self {
            RealizeError::GateFailed {
                object, condition, ..
            } => RealizeError::GateFailed {
                object,
                condition,
                rule: Some(name.to_owned()),
            },
            RealizeError::Unhealthy {
                object,
                condition,
                timeout,
                ..
            } => RealizeError::Unhealthy {
                object,
                condition,
                timeout,
                rule: Some(name.to_owned()),
            },
            other => other,
        }
    }

    /// Exit code: 1 for the user's input, 2 for the cluster, 130 when interrupted.
    pub fn exit_code(&self) -> u8 {
        match self {
            RealizeError::Interrupted => 130,
            RealizeError::Cluster(ClusterError::Conflict { .. })
            | RealizeError::Rejected(_)
            | RealizeError::Gaps(_)
            | RealizeError::OtherSet(_)
            | RealizeError::Conflicts(_) => 1,
            // The server rejected the object itself (malformed, invalid): the user's to fix.
            RealizeError::Cluster(e) if e.rejects_the_object() => 1,
            RealizeError::Kind { source, .. } if source.is_not_served() => 1,
            RealizeError::Cluster(_)
            | RealizeError::Kind { .. }
            | RealizeError::Unhealthy { .. }
            | RealizeError::GateFailed { .. }
            | RealizeError::Lock(_)
            | RealizeError::NoLock
            | RealizeError::ParentChanged { .. } => 2,
            _ => 1,
        }
    }
}
