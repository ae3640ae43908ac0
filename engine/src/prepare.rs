//! Validation before anything is built: environment, graph, kinds, sources, attributes and
//! references. A project that fails here writes nothing to the store.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use kiln_core::attrs::Attrs;
use kiln_core::diagnostic::{Diagnostic, SourceFile};
use kiln_core::graph::RuleGraph;
use kiln_core::interpolate::{has_references, Reference, Scope};
use kiln_core::kind::{BuildError, Kind, KindRegistry, LoadedSource};
use kiln_core::project::{Project, Rule, RuleIdx};
use kiln_core::sources::{expand, hash_source, read_source, Confinement, SourceEntry, SourceError};
use kiln_core::{EnvName, RelPath};
use rayon::prelude::*;
use serde_json::Value;

use super::error::EngineError;
use super::source_cache::{Hit, SourceCache, Stat};

/// A rule that passed validation, ready to hash and build.
pub struct PreparedRule<'p> {
    /// The rule as written.
    pub rule: &'p Rule,
    /// Its kind.
    pub kind: &'p dyn Kind,
    /// Its sources, sorted by path.
    pub srcs: Vec<SourceEntry>,
    /// Attributes with variables resolved; `${dep...}` still unresolved. Borrowed from the rule
    /// unless resolving changed them.
    pub attrs: Cow<'p, Attrs>,
    /// Values the kind reads from source text (`var.X`, `kiln.X`).
    pub source_vars: BTreeMap<String, Value>,
    /// The stat data of each source in `srcs` (same order), taken before it was hashed.
    pub stats: Vec<Stat>,
}

/// Every rule of a graph, validated, and what validation read from the file system.
pub struct Prepared<'p> {
    /// The rules by index.
    pub rules: BTreeMap<RuleIdx, PreparedRule<'p>>,
    /// The directories that source globs and directory sources listed.
    pub listed_dirs: Vec<kiln_core::sources::ListedDir>,
}

/// The selected environment: its name and variables.
pub struct Selected {
    /// `None` for a project without environments.
    pub env: Option<EnvName>,
    /// The variables, `[vars]` defaults included.
    pub vars: BTreeMap<String, Value>,
    /// For an instance made with `--var`: 8 hex digits of blake3 over the overrides.
    instance: Option<String>,
}

impl Selected {
    /// The environment's name as shown and stored (`-` when none).
    pub fn name(&self) -> &str {
        self.env.as_ref().map_or("-", EnvName::as_str)
    }

    /// The name of this instance of the environment: the environment's name, followed by
    /// `-<8 hex of the overrides>` when `--var` overrode variables. Each instance has its own
    /// GC root and its own ApplySet, so `--var namespace=pr-123` and `--var namespace=pr-124`
    /// are two separate sets.
    pub fn instance_name(&self) -> String {
        match &self.instance {
            Some(h) => format!("{}-{h}", self.name()),
            None => self.name().to_owned(),
        }
    }

    /// Overrides variables (`--var NAME=VALUE`). Each must be one the project defines, in
    /// `[vars]` or the selected environment: a misspelled name would otherwise make a new,
    /// separate instance silently.
    pub fn override_vars(&mut self, vars: &BTreeMap<String, Value>) -> Result<(), EngineError> {
        if vars.is_empty() {
            return Ok(());
        }
        for (name, value) in vars {
            if !self.vars.contains_key(name) {
                return Err(EngineError::UnknownVar {
                    name: name.clone(),
                    defined: self.vars.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
            self.vars.insert(name.clone(), value.clone());
        }
        let canonical = kiln_core::canonical::to_canonical_json(
            &serde_json::to_value(vars).expect("values serialize"),
        );
        self.instance = Some(kiln_core::Digest::of(&canonical).hex()[..8].to_owned());
        Ok(())
    }
}

/// Parses `NAME=VALUE` of `--var`. VALUE is kept as written: it is typed by the variable's
/// default when the project is loaded (see [`crate::var_override`]), so `--var tag=1.10` stays
/// the string `1.10` and `--var replicas=abc` is refused where `replicas` is defined.
pub fn parse_var(arg: &str) -> Result<(String, Value), String> {
    let (name, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("`{arg}` is not NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{arg}` has no variable name"));
    }
    Ok((name.to_owned(), Value::from(value)))
}

/// Checks `--env` against the project.
pub fn select_env(project: &Project, env: Option<&str>) -> Result<Selected, EngineError> {
    let available = || {
        project
            .envs
            .keys()
            .map(EnvName::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let env = match env {
        Some(e) => {
            let name = EnvName::new(e)
                .ok()
                .filter(|n| project.envs.contains_key(n));
            Some(name.ok_or_else(|| EngineError::UnknownEnv {
                env: e.to_owned(),
                hint: if project.envs.is_empty() {
                    "this project defines no [env.NAME] tables".to_owned()
                } else {
                    format!("this project defines: {}", available())
                },
            })?)
        }
        None if project.envs.is_empty() => None,
        None => {
            return Err(EngineError::EnvRequired {
                available: available(),
            })
        }
    };
    let vars = project.vars_for(env.as_ref());
    Ok(Selected {
        env,
        vars,
        instance: None,
    })
}

/// A scope where every dependency is declared but not yet built.
pub fn unresolved_scope<'a>(
    project: &'a Project,
    selected: &'a Selected,
    rule: &'a Rule,
) -> Scope<'a> {
    Scope {
        env: selected.name(),
        project: &project.name,
        vars: Some(&selected.vars),
        deps: rule.deps.iter().map(|d| (d.value.as_str(), None)).collect(),
    }
}

/// Validates every rule of `graph`, in parallel, keyed by rule index. Reports every invalid
/// rule, in rule-name order.
pub fn prepare<'p>(
    project: &'p Project,
    graph: &RuleGraph,
    selected: &Selected,
    kinds: &'p dyn KindRegistry,
    cache: &SourceCache,
) -> Result<Prepared<'p>, EngineError> {
    let mut indices: Vec<RuleIdx> = graph.order().iter().map(|n| graph.rule_index(*n)).collect();
    indices.sort_unstable();
    let confinement = Confinement::new(&project.root).map_err(EngineError::ProjectDir)?;
    let results: Vec<Result<PreparedRule<'p>, Box<Diagnostic>>> = indices
        .par_iter()
        .map(|&i| prepare_rule(project, &project[i], selected, kinds, cache, &confinement))
        .collect();
    let mut out = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, r) in indices.into_iter().zip(results) {
        match r {
            Ok(p) => {
                out.insert(i, p);
            }
            Err(d) => errors.push(*d),
        }
    }
    // Every invalid rule in one run, not one per run.
    match errors.len() {
        0 => Ok(Prepared {
            rules: out,
            listed_dirs: confinement.take_listed(),
        }),
        1 => Err(EngineError::Invalid(Box::new(errors.remove(0)))),
        _ => Err(EngineError::InvalidRules(errors)),
    }
}

fn prepare_rule<'p>(
    project: &'p Project,
    rule: &'p Rule,
    selected: &Selected,
    kinds: &'p dyn KindRegistry,
    cache: &SourceCache,
    confinement: &Confinement,
) -> Result<PreparedRule<'p>, Box<Diagnostic>> {
    let diag = |loc: &kiln_core::diagnostic::Location, msg: String| {
        Box::new(project.diagnostic(loc, Some(&rule.name), msg))
    };
    let kind = kinds.get(&rule.kind.value).ok_or_else(|| {
        Box::new(
            project
                .diagnostic(
                    &rule.kind.loc,
                    Some(&rule.name),
                    format!("unknown kind `{}`", rule.kind.value),
                )
                .with_hint(format!("the kinds are: {}", kinds.names().join(", "))),
        )
    })?;

    let scope = unresolved_scope(project, selected, rule);
    let (attrs, value) = checked_attrs(project, rule, kind, &scope)?;
    check_from_is_in_deps(project, rule, &value)?;
    let paths = source_paths(project, rule, confinement)?;
    let mut srcs = Vec::with_capacity(paths.len());
    let mut stats = Vec::with_capacity(paths.len());
    let mut source_vars = BTreeMap::new();
    let kind_key = format!("{}@{}", kind.name(), kind.version());
    let first_src = || {
        rule.srcs
            .first()
            .map_or(rule.loc.clone(), |s| s.loc.clone())
    };
    let mut hashed = hash_streamed_sources(project, kind, cache, &kind_key, &paths);
    for (path, stat) in paths {
        let streamed = hashed.remove(&path);
        let stat = match (streamed.as_ref().map(|(s, _)| *s), stat) {
            (Some(s), _) | (None, Some(s)) => s,
            (None, None) => Stat::of(&project.root.join(path.as_str()))
                .map_err(|e| diag(&first_src(), format!("failed to read source `{path}`: {e}")))?,
        };
        let (entry, refs) = match cache.lookup(&path, &stat, &kind_key) {
            Some(Hit {
                entry,
                refs: Some(refs),
            }) => (entry, refs),
            _ if kind.streams_sources() => {
                let entry = match streamed {
                    Some((_, hashed)) => hashed,
                    None => hash_source(&project.root, &path),
                }
                .map_err(|e| diag(&first_src(), e.to_string()))?;
                cache.record(&path, stat, &entry.digest, &kind_key, &[]);
                (entry, Vec::new())
            }
            _ => {
                let (entry, content) = read_source(&project.root, &path)
                    .map_err(|e| diag(&first_src(), e.to_string()))?;
                let loaded = LoadedSource {
                    path: path.clone(),
                    content: content.into(),
                    executable: entry.executable,
                };
                let refs = kind
                    .source_references(&value, &loaded)
                    .map_err(|e| source_diagnostic(project, rule, &loaded, &e))?;
                cache.record(&path, stat, &entry.digest, &kind_key, &refs);
                (entry, refs)
            }
        };
        for r in refs {
            let value = scope.lookup(&r).map_err(|e| {
                let content = std::fs::read(project.root.join(path.as_str())).unwrap_or_default();
                let loaded = LoadedSource {
                    path: path.clone(),
                    content: content.into(),
                    executable: false,
                };
                let offset = find_reference(&loaded, &r);
                Box::new(source_file_diagnostic(&loaded, offset, rule, e.to_string()))
            })?;
            if let (Some(key), Some(value)) = (r.derivation_key(), value) {
                source_vars.insert(key, value);
            }
        }
        srcs.push(entry);
        stats.push(stat);
    }
    Ok(PreparedRule {
        rule,
        kind,
        srcs,
        attrs,
        source_vars,
        stats,
    })
}

/// The sources of a kind that streams them (`exec`, whose sources may be many and large) that
/// the stat cache does not know, hashed in parallel, each with its stat data taken before it was
/// hashed. A source that cannot be stat'ed is left to the caller, which reports it.
fn hash_streamed_sources(
    project: &Project,
    kind: &dyn Kind,
    cache: &SourceCache,
    kind_key: &str,
    paths: &[(RelPath, Option<Stat>)],
) -> HashMap<RelPath, (Stat, Result<SourceEntry, SourceError>)> {
    if !kind.streams_sources() || paths.len() < 2 {
        return HashMap::new();
    }
    paths
        .par_iter()
        .filter_map(|(path, stat)| {
            let stat = match stat {
                Some(s) => *s,
                None => Stat::of(&project.root.join(path.as_str())).ok()?,
            };
            match cache.lookup(path, &stat, kind_key) {
                Some(Hit { refs: Some(_), .. }) => None,
                _ => Some((path.clone(), (stat, hash_source(&project.root, path)))),
            }
        })
        .collect()
}

/// The rule's attributes with `${var..}` resolved, checked by its kind, and with host inputs
/// (such as `exec` tools) resolved into them: compact (borrowed from the rule when nothing
/// changed them), and as a value for the checks that follow.
fn checked_attrs<'p>(
    project: &Project,
    rule: &'p Rule,
    kind: &dyn Kind,
    scope: &Scope<'_>,
) -> Result<(Cow<'p, Attrs>, Value), Box<Diagnostic>> {
    let diag = |loc: &kiln_core::diagnostic::Location, msg: String| {
        Box::new(project.diagnostic(loc, Some(&rule.name), msg))
    };
    let value = rule.attrs.to_value();
    let (value, changed) = if rule.attrs.may_have_references() && has_references(&value) {
        let resolved = scope
            .interpolate_value(&value)
            .map_err(|(path, e)| diag(&project.attr_location(rule, &path), e.to_string()))?;
        (resolved, true)
    } else {
        (value, false)
    };
    kind.check(&value)
        .map_err(|e| diag(&project.attr_location(rule, &e.path), attr_message(&e)))?;
    let (value, changed) = match kind
        .host_inputs(&value)
        .map_err(|e| diag(&project.attr_location(rule, &e.path), attr_message(&e)))?
    {
        Some(resolved) => (resolved, true),
        None => (value, changed),
    };
    let attrs = if changed {
        Cow::Owned(Attrs::from_value(&value))
    } else {
        Cow::Borrowed(&rule.attrs)
    };
    Ok((attrs, value))
}

/// `from` takes files of dependencies: each must be declared in `deps`, caught here rather
/// than after other rules were built.
fn check_from_is_in_deps(
    project: &Project,
    rule: &Rule,
    attrs: &Value,
) -> Result<(), Box<Diagnostic>> {
    if let Some(Value::Array(from)) = attrs.get("from") {
        for (i, name) in from.iter().enumerate() {
            let name = name.as_str().unwrap_or_default();
            if !rule.deps.iter().any(|d| d.value.as_str() == name) {
                return Err(Box::new(
                    project
                        .diagnostic(
                            &project.attr_location(rule, &format!("from[{i}]")),
                            Some(&rule.name),
                            format!("`from` names `{name}`, which is not in `deps`"),
                        )
                        .with_hint(format!("add `{name}` to `deps`")),
                ));
            }
        }
    }

    Ok(())
}

/// The rule's `srcs` expanded, sorted and deduplicated, each with its stat when already known:
/// a plain file path costs one stat, a glob a walk.
fn source_paths(
    project: &Project,
    rule: &Rule,
    confinement: &Confinement,
) -> Result<Vec<(RelPath, Option<Stat>)>, Box<Diagnostic>> {
    let diag = |loc: &kiln_core::diagnostic::Location, msg: String| {
        Box::new(project.diagnostic(loc, Some(&rule.name), msg))
    };
    let mut paths: Vec<(RelPath, Option<Stat>)> = Vec::new();
    for pattern in &rule.srcs {
        if let Some(rel) = plain_file(&pattern.value) {
            // One lstat when the file and its directory are known to be inside the project.
            match confinement.metadata(&rel) {
                Ok(Some(meta)) if meta.is_file() => {
                    paths.push((rel, Some(Stat::from_metadata(&meta))));
                    continue;
                }
                Err(e) => return Err(diag(&pattern.loc, e.to_string())),
                _ => {}
            }
        }
        let found =
            expand(confinement, &pattern.value).map_err(|e| diag(&pattern.loc, e.to_string()))?;
        paths.extend(found.into_iter().map(|p| (p, None)));
    }
    paths.sort_by(|a, b| a.0.cmp(&b.0));
    paths.dedup_by(|a, b| a.0 == b.0);
    Ok(paths)
}

/// The pattern as a relative path when it has no glob characters.
fn plain_file(pattern: &str) -> Option<RelPath> {
    let p = pattern.trim_start_matches("./");
    if p.contains(['*', '?', '[', '{']) {
        return None;
    }
    RelPath::new(p).ok()
}

fn find_reference(src: &LoadedSource, r: &Reference) -> Option<usize> {
    let text = std::str::from_utf8(&src.content).ok()?;
    // The reference as written, not the first place its name occurs (a rule's name is often
    // also a label or a word in a comment).
    let spelled = match r {
        Reference::Var(n) => format!("var.{n}"),
        Reference::Kiln(n) => format!("kiln.{n}"),
        Reference::Dep { rule, key } => format!("dep.{rule}.{key}"),
    };
    text.find(&format!("${{{spelled}}}"))
        .or_else(|| text.find(&spelled))
}

/// A diagnostic pointing into a source file (YAML, template) rather than a TOML file.
pub fn source_file_diagnostic(
    src: &LoadedSource,
    offset: Option<usize>,
    rule: &Rule,
    message: String,
) -> Diagnostic {
    let file = SourceFile {
        display: src.path.to_string(),
        text: Arc::from(String::from_utf8_lossy(&src.content).as_ref()),
    };
    let start = offset.unwrap_or(0).min(file.text.len());
    Diagnostic::new(&file, start..start, Some(rule.name.as_str()), message)
}

/// Turns a kind's [`BuildError`] about a source into a located diagnostic.
pub fn source_diagnostic(
    project: &Project,
    rule: &Rule,
    src: &LoadedSource,
    e: &BuildError,
) -> Box<Diagnostic> {
    match e {
        BuildError::Source {
            offset, message, ..
        } => Box::new(source_file_diagnostic(src, *offset, rule, message.clone())),
        BuildError::Attribute(a) => Box::new(project.diagnostic(
            &project.attr_location(rule, &a.path),
            Some(&rule.name),
            attr_message(a),
        )),
        other => Box::new(source_file_diagnostic(src, None, rule, other.to_string())),
    }
}

/// "attribute `a.b`: message", or just the message for the rule as a whole.
pub fn attr_message(e: &kiln_core::kind::AttrError) -> String {
    if e.path.is_empty() {
        e.message.clone()
    } else {
        format!("attribute `{}`: {}", e.path, e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reference_is_found_where_it_is_written() {
        let text = "labels: {tier: monitoring}\n# var.ns in a comment\nname: \"${dep.monitoring.name}\"\nns: ${var.ns}\n";
        let src = LoadedSource {
            path: RelPath::new("a.yaml").unwrap(),
            content: text.as_bytes().to_vec().into(),
            executable: false,
        };
        let dep = Reference::Dep {
            rule: kiln_core::RuleName::new("monitoring").unwrap(),
            key: "name".into(),
        };
        assert_eq!(
            find_reference(&src, &dep),
            text.find("${dep.monitoring.name}")
        );
        let var = Reference::Var("ns".into());
        assert_eq!(find_reference(&src, &var), text.find("${var.ns}"));
    }

    #[test]
    fn vars_are_kept_as_written_until_typed_by_their_default() {
        assert_eq!(
            parse_var("replicas=3").unwrap(),
            ("replicas".into(), Value::from("3"))
        );
        assert_eq!(parse_var("on=true").unwrap().1, Value::from("true"));
        assert_eq!(parse_var("ns=pr-123").unwrap().1, Value::from("pr-123"));
        assert_eq!(parse_var("x=a=b").unwrap().1, Value::from("a=b"));
        assert_eq!(parse_var("empty=").unwrap().1, Value::from(""));
        assert!(parse_var("novalue").is_err());
        assert!(parse_var("=3").is_err());
    }

    #[test]
    fn overrides_make_a_separate_instance_and_refuse_unknown_names() {
        let mut s = Selected {
            env: None,
            vars: [("ns".to_owned(), Value::from("shop"))].into(),
            instance: None,
        };
        assert_eq!(s.instance_name(), "-");
        let mut a = BTreeMap::new();
        a.insert("ns".to_owned(), Value::from("pr-1"));
        s.override_vars(&a).unwrap();
        let first = s.instance_name();
        assert!(first.starts_with("--") && first.len() == 10, "{first}");
        a.insert("ns".to_owned(), Value::from("pr-2"));
        s.override_vars(&a).unwrap();
        assert_ne!(s.instance_name(), first);
        assert_eq!(s.vars["ns"], "pr-2");
        let typo = [("nss".to_owned(), Value::from("x"))].into();
        assert!(matches!(
            s.override_vars(&typo),
            Err(EngineError::UnknownVar { .. })
        ));
    }
}
