//! Errors of `kiln build` and their exit codes.

use kiln_core::diagnostic::Diagnostic;
use kiln_core::load::LoadError;
use kiln_store::StoreError;

/// Why a build could not run at all (as opposed to a rule failing).
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum EngineError {
    /// The project could not be loaded.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Load(#[from] LoadError),
    /// The project is invalid for the selected environment.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] Box<Diagnostic>),
    /// Several rules are invalid: every one is reported, in rule-name order.
    #[error("{} rules are invalid", .0.len())]
    InvalidRules(#[related] Vec<Diagnostic>),
    /// Several `--var` values are not of their variable's type: every one is reported.
    #[error("{} `--var` values are not of their variables' types", .0.len())]
    InvalidVars(#[related] Vec<Diagnostic>),
    /// Two rules produce one object with different content, and neither depends on the other.
    #[error("rules `{a}` and `{b}` both produce `{object}` with different content, and neither depends on the other")]
    #[diagnostic(help("make one rule depend on the other (an overlay over its base), or remove one of the objects"))]
    ObjectConflict {
        /// The artifact path of the object.
        object: String,
        /// One rule.
        a: String,
        /// The other.
        b: String,
    },
    /// `--env` names no environment of the project.
    #[error("unknown environment `{env}`")]
    #[diagnostic(help("{}", .hint))]
    UnknownEnv {
        /// The requested environment.
        env: String,
        /// What the project has.
        hint: String,
    },
    /// `--var` names a variable the project does not define.
    #[error("`--var {name}`: the project defines no variable `{name}`")]
    #[diagnostic(help("variables of this environment: {defined}"))]
    UnknownVar {
        /// The name given.
        name: String,
        /// The names defined.
        defined: String,
    },
    /// The project has environments but none was chosen.
    #[error("choose an environment with `--env`")]
    #[diagnostic(help("this project defines: {}", .available))]
    EnvRequired {
        /// What the project has.
        available: String,
    },
    /// The project directory could not be resolved.
    #[error("failed to resolve the project directory")]
    ProjectDir(#[source] kiln_core::sources::SourceError),
    /// Objects kept coming back missing or corrupt after rebuilding them.
    #[error("the store keeps losing or damaging rebuilt objects")]
    #[diagnostic(help("run `kiln store verify`, and check the disk the store is on"))]
    Unhealable,
    /// The store failed.
    #[error("store error")]
    Store(#[from] StoreError),
    /// A rule name that the project does not define (in this environment).
    #[error("no rule `{rule}` in environment `{env}`")]
    #[diagnostic(help("`kiln graph --format json` lists the rules"))]
    UnknownRule {
        /// The name given.
        rule: String,
        /// The environment.
        env: String,
    },
    /// `kiln why`/`kiln diff --since` with nothing to compare with.
    #[error("no earlier build of environment `{env}` to compare with")]
    #[diagnostic(help("run `kiln build --env {env}` first (or pass `--since ROOT_FILE`)"))]
    NoEarlierBuild {
        /// The environment.
        env: String,
    },
    /// A rule has never been built for this environment.
    #[error("rule `{rule}` has no build in the store for environment `{env}`")]
    #[diagnostic(help("run `kiln build --env {env}` first"))]
    NotBuilt {
        /// The rule.
        rule: String,
        /// The environment.
        env: String,
    },
}

impl EngineError {
    /// 1 for errors in the user's input, 2 for infrastructure failures.
    pub fn exit_code(&self) -> i32 {
        match self {
            EngineError::Load(LoadError::Read { .. })
            | EngineError::Store(_)
            | EngineError::ProjectDir(_)
            | EngineError::Unhealable => 2,
            _ => 1,
        }
    }
}
