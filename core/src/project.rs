//! The loaded project: environments, variables and rules, with their source locations.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use crate::attrs::Attrs;
use crate::diagnostic::{Diagnostic, FileId, Location, SourceFile};
use crate::name::{EnvName, RuleName};

/// A value with the place it was written.
#[derive(Clone, Debug)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub loc: Location,
}

/// An environment: a table of variables.
#[derive(Clone, Debug)]
pub struct Env {
    /// Its name.
    pub name: EnvName,
    /// Its variables, without the `[vars]` defaults.
    pub vars: BTreeMap<String, Value>,
    /// Where `[env.NAME]` was written.
    pub loc: Location,
}

/// One build rule as written, before interpolation.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Unique name.
    pub name: RuleName,
    /// The kind (`manifest`, `configmap`, ...).
    pub kind: Located<String>,
    /// Kind-specific attributes (a JSON object), in compact form.
    pub attrs: Attrs,
    /// Source patterns, relative to the project root.
    pub srcs: Vec<Located<String>>,
    /// Dependencies.
    pub deps: Vec<Located<RuleName>>,
    /// The environments this rule exists in (all when `None`).
    pub envs: Option<Vec<EnvName>>,
    /// Whether `kiln apply` realizes this rule's objects (false for intermediate rules, such as
    /// a base that overlays rename).
    pub realize: bool,
    /// Declared nondeterministic (`nondeterministic = true`): `kiln audit` reports a differing
    /// rebuild as expected, not as a failure. Not part of the derivation.
    pub nondeterministic: bool,
    /// Where `[rule.NAME]` was written.
    pub loc: Location,
}

impl Rule {
    /// Whether the rule takes part in environment `env`.
    pub fn in_env(&self, env: Option<&EnvName>) -> bool {
        match (&self.envs, env) {
            (None, _) => true,
            (Some(list), Some(env)) => list.contains(env),
            (Some(_), None) => false,
        }
    }
}

/// A loaded project.
#[derive(Clone, Debug)]
pub struct Project {
    /// `[project] name`.
    pub name: String,
    /// The directory holding `kiln.toml`.
    pub root: PathBuf,
    /// Every TOML file read, for diagnostics.
    pub files: Vec<SourceFile>,
    /// The directories `include` globs listed (for a build's fingerprint).
    pub listed_dirs: Vec<crate::sources::ListedDir>,
    /// `[vars]`: defaults for every environment.
    pub defaults: BTreeMap<String, Value>,
    /// `[env.NAME]` tables.
    pub envs: BTreeMap<EnvName, Env>,
    /// Rules, sorted by name.
    pub rules: Vec<Rule>,
}

impl Project {
    /// A diagnostic at `loc`.
    pub fn diagnostic(
        &self,
        loc: &Location,
        rule: Option<&RuleName>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::new(
            &self.files[loc.file],
            loc.span.clone(),
            rule.map(RuleName::as_str),
            message,
        )
    }

    /// The file a location points into.
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id]
    }

    /// The variables of `env`: `[vars]` overlaid with `[env.NAME]`.
    pub fn vars_for(&self, env: Option<&EnvName>) -> BTreeMap<String, Value> {
        let mut vars = self.defaults.clone();
        if let Some(e) = env.and_then(|e| self.envs.get(e)) {
            vars.extend(e.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        vars
    }

    /// The location of attribute `path` (`a.b[1].c`) of `rule`, or of its closest written
    /// ancestor. Spans are not kept for every value while loading; the rule's file is parsed
    /// again here, on the error path only.
    pub fn attr_location(&self, rule: &Rule, path: &str) -> Location {
        let file = rule.loc.file;
        let span = crate::span::find_attr_span(&self.files[file].text, rule.name.as_str(), path);
        Location {
            file,
            span: span.unwrap_or_else(|| rule.loc.span.clone()),
        }
    }

    /// Every rule with its index.
    pub fn indexed_rules(&self) -> impl Iterator<Item = (RuleIdx, &Rule)> {
        self.rules.iter().enumerate().map(|(i, r)| (RuleIdx(i), r))
    }

    /// The rule called `name`.
    pub fn rule(&self, name: &str) -> Option<&Rule> {
        self.rules
            .binary_search_by(|r| r.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.rules[i])
    }
}

/// The index of a rule in [`Project::rules`]: `project[idx]` is the rule. Only
/// [`Project::indexed_rules`] makes one, so an index always belongs to a project's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleIdx(usize);

impl RuleIdx {
    /// The position in [`Project::rules`].
    pub fn get(self) -> usize {
        self.0
    }
}

impl std::ops::Index<RuleIdx> for Project {
    type Output = Rule;

    fn index(&self, idx: RuleIdx) -> &Rule {
        &self.rules[idx.0]
    }
}
