//! Reading `kiln.toml` and its includes into a [`Project`].
//!
//! ```toml
//! [project]
//! name = "shop"
//! include = ["rules/*.toml"]     # more files holding [rule.*] tables
//!
//! [vars]                          # defaults for every environment
//! namespace = "shop"
//!
//! [env.production]
//! replicas = 3
//!
//! [rule.api]
//! kind = "manifest"
//! srcs = ["k8s/api.yaml"]
//! deps = ["api-config"]
//! envs = ["production"]           # optional: only in these environments
//! realize = false                  # optional: an intermediate rule, built but never applied
//! # ...kind-specific attributes
//! ```

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diagnostic::{Diagnostic, FileId, Location, SourceFile};
use crate::name::{EnvName, RuleName};
use crate::project::{Env, Located, Project, Rule};

/// The root file of a project.
pub const PROJECT_FILE: &str = "kiln.toml";

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    /// No `kiln.toml` in the directory.
    #[error("no `kiln.toml` in `{0}`")]
    #[diagnostic(help("run kiln in a project directory, or pass it: `kiln build DIR`"))]
    NoProject(PathBuf),
    /// A file could not be read.
    #[error("failed to read `{path}`")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The project is invalid; the diagnostic says where.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] Box<Diagnostic>),
}

type Result<T, E = LoadError> = std::result::Result<T, E>;

struct Loader {
    root: PathBuf,
    files: Vec<SourceFile>,
}

impl Loader {
    fn diag(
        &self,
        file: FileId,
        span: Range<usize>,
        rule: Option<&str>,
        msg: impl Into<String>,
    ) -> LoadError {
        LoadError::Invalid(Box::new(Diagnostic::new(
            &self.files[file],
            span,
            rule,
            msg,
        )))
    }

    fn read(&mut self, path: &Path) -> Result<FileId> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let display = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => {
                // Located on the first bad byte: everything before it is unchanged in the
                // lossy text, so the offset holds there.
                let offset = e.utf8_error().valid_up_to();
                let file = SourceFile {
                    display,
                    text: Arc::from(String::from_utf8_lossy(e.as_bytes()).into_owned()),
                };
                return Err(LoadError::Invalid(Box::new(Diagnostic::new(
                    &file,
                    offset..offset + 1,
                    None,
                    "the file is not valid UTF-8",
                ))));
            }
        };
        self.files.push(SourceFile {
            display,
            text: Arc::from(text),
        });
        Ok(self.files.len() - 1)
    }
}

/// Loads the project in `dir`.
pub fn load_project(dir: &Path) -> Result<Project> {
    let root = dir.to_path_buf();
    let main = root.join(PROJECT_FILE);
    if !main.is_file() {
        return Err(LoadError::NoProject(root));
    }
    let mut loader = Loader {
        root: root.clone(),
        files: Vec::new(),
    };
    let main_id = loader.read(&main)?;
    let text = loader.files[main_id].text.clone();
    let doc = parse_toml(&loader, main_id, &text)?;

    let mut name = None;
    let mut includes: Vec<Located<String>> = Vec::new();
    let mut defaults = BTreeMap::new();
    let mut envs = BTreeMap::new();
    let mut rules: BTreeMap<RuleName, Rule> = BTreeMap::new();

    for (key, value) in doc.get_ref() {
        let k = key.get_ref().as_ref();
        match k {
            "project" => {
                let t = expect_table(&loader, main_id, value, None, "[project]")?;
                for (pk, pv) in t {
                    match pk.get_ref().as_ref() {
                        "name" => {
                            name = Some(expect_str(&loader, main_id, pv, None, "project.name")?)
                        }
                        "description" => {
                            expect_str(&loader, main_id, pv, None, "project.description")?;
                        }
                        "include" => {
                            includes =
                                expect_str_list(&loader, main_id, pv, None, "project.include")?
                        }
                        other => {
                            return Err(loader
                                .diag(
                                    main_id,
                                    pk.span(),
                                    None,
                                    format!("unknown key `{other}` in [project]"),
                                )
                                .with_hint("[project] takes `name`, `description` and `include`"))
                        }
                    }
                }
            }
            "vars" => {
                let t = expect_table(&loader, main_id, value, None, "[vars]")?;
                defaults = vars_table(&loader, main_id, t)?;
            }
            "env" => {
                let t = expect_table(&loader, main_id, value, None, "[env]")?;
                for (ek, ev) in t {
                    let env_name = EnvName::new(ek.get_ref().as_ref())
                        .map_err(|e| loader.diag(main_id, ek.span(), None, e.to_string()))?;
                    let vt = expect_table(&loader, main_id, ev, None, "an environment")?;
                    let vars = vars_table(&loader, main_id, vt)?;
                    envs.insert(
                        env_name.clone(),
                        Env {
                            name: env_name,
                            vars,
                            loc: Location {
                                file: main_id,
                                span: ek.span(),
                            },
                        },
                    );
                }
            }
            "rule" => add_rules(&loader, main_id, value, &mut rules)?,
            other => {
                return Err(loader
                    .diag(
                        main_id,
                        key.span(),
                        None,
                        format!("unknown top-level key `{other}`"),
                    )
                    .with_hint(
                        "kiln.toml takes [project], [vars], [env.NAME] and [rule.NAME] tables",
                    ))
            }
        }
    }
    let name = name.ok_or_else(|| {
        loader
            .diag(main_id, 0..0, None, "missing `[project] name`")
            .with_hint("add:\n[project]\nname = \"my-platform\"")
    })?;

    let mut include_ids = Vec::new();
    let confinement = if includes.is_empty() {
        None
    } else {
        Some(
            crate::sources::Confinement::new(&root)
                .map_err(|e| loader.diag(main_id, 0..0, None, format!("include: {e}")))?,
        )
    };
    for inc in &includes {
        let confinement = confinement.as_ref().expect("made when there are includes");
        let matched = crate::sources::expand(confinement, &inc.value).map_err(|e| {
            loader.diag(main_id, inc.loc.span.clone(), None, format!("include: {e}"))
        })?;
        for rel in matched {
            if rel.as_str() != PROJECT_FILE {
                include_ids.push(loader.read(&root.join(rel.as_str()))?);
            }
        }
    }
    // Included files parse in parallel; rules are then merged in file order.
    let parsed: Vec<Result<Vec<Rule>>> = include_ids
        .par_iter()
        .map(|&id| parse_rule_file(&loader, id))
        .collect();
    for file_rules in parsed {
        for rule in file_rules? {
            insert_rule(&loader, &mut rules, rule)?;
        }
    }
    // `envs` must name environments the project defines: a misspelling would silently drop
    // the rule from every environment.
    for rule in rules.values() {
        for (i, e) in rule.envs.iter().flatten().enumerate() {
            if !envs.contains_key(e) {
                let file = rule.loc.file;
                let span = find_attr_span(
                    &loader.files[file].text,
                    rule.name.as_str(),
                    &format!("envs[{i}]"),
                )
                .unwrap_or_else(|| rule.loc.span.clone());
                let defined: Vec<&str> = envs.keys().map(EnvName::as_str).collect();
                return Err(
                    match loader.diag(
                        file,
                        span,
                        Some(rule.name.as_str()),
                        format!("`envs` names `{e}`, which is not an environment of this project"),
                    ) {
                        LoadError::Invalid(d) => {
                            LoadError::Invalid(Box::new(d.with_hint(if defined.is_empty() {
                                "this project defines no [env.NAME] tables".to_owned()
                            } else {
                                format!("this project defines: {}", defined.join(", "))
                            })))
                        }
                        other => other,
                    },
                );
            }
        }
    }
    Ok(Project {
        name,
        root,
        files: loader.files,
        defaults,
        envs,
        rules: rules.into_values().collect(),
    })
}

fn parse_rule_file(loader: &Loader, id: FileId) -> Result<Vec<Rule>> {
    let text = loader.files[id].text.clone();
    let doc = parse_toml(loader, id, &text)?;
    let mut out = Vec::new();
    for (key, value) in doc.get_ref() {
        if key.get_ref().as_ref() != "rule" {
            return Err(loader
                .diag(
                    id,
                    key.span(),
                    None,
                    format!("unknown key `{}` in an included file", key.get_ref()),
                )
                .with_hint("included files hold only [rule.NAME] tables"));
        }
        let t = expect_table(loader, id, value, None, "[rule]")?;
        for (rk, rv) in t {
            out.push(parse_rule(loader, id, rk, rv)?);
        }
    }
    Ok(out)
}

fn add_rules(
    loader: &Loader,
    file: FileId,
    value: &Spanned<DeValue<'_>>,
    rules: &mut BTreeMap<RuleName, Rule>,
) -> Result<()> {
    let t = expect_table(loader, file, value, None, "[rule]")?;
    for (rk, rv) in t {
        insert_rule(loader, rules, parse_rule(loader, file, rk, rv)?)?;
    }
    Ok(())
}

fn insert_rule(loader: &Loader, rules: &mut BTreeMap<RuleName, Rule>, rule: Rule) -> Result<()> {
    if let Some(prev) = rules.get(&rule.name) {
        let (pl, _) = loader.files[prev.loc.file].line_col(prev.loc.span.start);
        return Err(loader.diag(
            rule.loc.file,
            rule.loc.span.clone(),
            Some(rule.name.as_str()),
            format!(
                "rule `{}` is defined twice (first at {}:{pl})",
                rule.name, loader.files[prev.loc.file].display
            ),
        ));
    }
    rules.insert(rule.name.clone(), rule);
    Ok(())
}

fn parse_toml<'t>(loader: &Loader, file: FileId, text: &'t str) -> Result<Spanned<DeTable<'t>>> {
    DeTable::parse(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        loader.diag(
            file,
            span,
            None,
            format!("invalid TOML: {}", e.message().trim_end()),
        )
    })
}

fn parse_rule(
    loader: &Loader,
    file: FileId,
    key: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> Result<Rule> {
    let raw_name = key.get_ref().as_ref();
    let name = RuleName::new(raw_name)
        .map_err(|e| loader.diag(file, key.span(), Some(raw_name), e.to_string()))?;
    let rn = Some(name.as_str());
    let table = expect_table(loader, file, value, rn, "a rule")?;
    let mut kind = None;
    let mut srcs = Vec::new();
    let mut deps = Vec::new();
    let mut envs = None;
    let mut realize = true;
    let mut attrs = serde_json::Map::new();
    for (k, v) in table {
        let ks = k.get_ref().as_ref();
        match ks {
            "kind" => {
                kind = Some(Located {
                    value: expect_str(loader, file, v, rn, "kind")?,
                    loc: Location {
                        file,
                        span: v.span(),
                    },
                })
            }
            "srcs" => srcs = expect_str_list(loader, file, v, rn, "srcs")?,
            "deps" => {
                for d in expect_str_list(loader, file, v, rn, "deps")? {
                    let dep = RuleName::new(&d.value)
                        .map_err(|e| loader.diag(file, d.loc.span.clone(), rn, e.to_string()))?;
                    deps.push(Located {
                        value: dep,
                        loc: d.loc,
                    });
                }
            }
            "envs" => {
                let mut list = Vec::new();
                for e in expect_str_list(loader, file, v, rn, "envs")? {
                    list.push(EnvName::new(&e.value).map_err(|err| {
                        loader.diag(file, e.loc.span.clone(), rn, err.to_string())
                    })?);
                }
                envs = Some(list);
            }
            "realize" => {
                realize = v
                    .get_ref()
                    .as_bool()
                    .ok_or_else(|| type_error(loader, file, v, rn, "realize", "a boolean"))?;
            }
            "description" => {
                expect_str(loader, file, v, rn, "description")?;
            }
            _ => {
                let json = to_json(loader, file, v, rn)?;
                attrs.insert(ks.to_owned(), json);
            }
        }
    }
    let kind = kind.ok_or_else(|| {
        loader
            .diag(file, key.span(), rn, "missing `kind`")
            .with_hint("every rule needs `kind = \"...\"`, for example `kind = \"manifest\"`")
    })?;
    Ok(Rule {
        name,
        kind,
        attrs: Value::Object(attrs),
        srcs,
        deps,
        envs,
        realize,
        loc: Location {
            file,
            span: key.span(),
        },
    })
}

fn vars_table(loader: &Loader, file: FileId, t: &DeTable<'_>) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (k, v) in t {
        out.insert(k.get_ref().to_string(), to_json(loader, file, v, None)?);
    }
    Ok(out)
}

fn type_error(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
    what: &str,
    expected: &str,
) -> LoadError {
    loader.diag(
        file,
        v.span(),
        rule,
        format!(
            "`{what}` must be {expected}, found {}",
            v.get_ref().type_str()
        ),
    )
}

fn expect_table<'a, 't>(
    loader: &Loader,
    file: FileId,
    v: &'a Spanned<DeValue<'t>>,
    rule: Option<&str>,
    what: &str,
) -> Result<&'a DeTable<'t>> {
    v.get_ref()
        .as_table()
        .ok_or_else(|| type_error(loader, file, v, rule, what, "a table"))
}

fn expect_str(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
    what: &str,
) -> Result<String> {
    v.get_ref()
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| type_error(loader, file, v, rule, what, "a string"))
}

fn expect_str_list(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
    what: &str,
) -> Result<Vec<Located<String>>> {
    let arr = v
        .get_ref()
        .as_array()
        .ok_or_else(|| type_error(loader, file, v, rule, what, "an array of strings"))?;
    arr.iter()
        .map(|item| {
            Ok(Located {
                value: expect_str(loader, file, item, rule, what)?,
                loc: Location {
                    file,
                    span: item.span(),
                },
            })
        })
        .collect()
}

/// Converts a TOML value to JSON.
fn to_json(
    loader: &Loader,
    file: FileId,
    v: &Spanned<DeValue<'_>>,
    rule: Option<&str>,
) -> Result<Value> {
    Ok(match v.get_ref() {
        DeValue::String(s) => Value::String(s.to_string()),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Integer(i) => {
            let n = i64::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| loader.diag(file, v.span(), rule, "integer out of range"))?;
            Value::from(n)
        }
        DeValue::Float(f) => {
            let x: f64 = f
                .as_str()
                .replace('_', "")
                .parse()
                .map_err(|_| loader.diag(file, v.span(), rule, "invalid float"))?;
            serde_json::Number::from_f64(x)
                .map(Value::Number)
                .ok_or_else(|| {
                    loader.diag(
                        file,
                        v.span(),
                        rule,
                        "`inf` and `nan` are not allowed in attributes",
                    )
                })?
        }
        DeValue::Datetime(d) => Value::String(d.to_string()),
        DeValue::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                out.push(to_json(loader, file, item, rule)?);
            }
            Value::Array(out)
        }
        DeValue::Table(t) => {
            let mut out = serde_json::Map::new();
            for (k, item) in t {
                out.insert(k.get_ref().to_string(), to_json(loader, file, item, rule)?);
            }
            Value::Object(out)
        }
    })
}

/// The span of attribute `path` (`a.b[1].c`, keys may themselves contain dots) of rule `rule`
/// in TOML `text`, or of the closest ancestor found.
pub(crate) fn find_attr_span(text: &str, rule: &str, path: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let rules = doc.get_ref().get("rule")?.get_ref().as_table()?;
    let mut cur = rules.get(rule)?;
    let mut best = None;
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let (idx, tail) = after.split_once(']')?;
            let next = cur.get_ref().as_array()?.get(idx.parse::<usize>().ok()?)?;
            cur = next;
            best = Some(cur.span());
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        let table = cur.get_ref().as_table()?;
        // The longest key of this table that `rest` starts with, followed by `.`, `[` or the end.
        let (key, value) = table
            .iter()
            .filter(|(k, _)| {
                let k = k.get_ref().as_ref();
                rest.starts_with(k)
                    && matches!(rest.as_bytes().get(k.len()), None | Some(b'.') | Some(b'['))
            })
            .max_by_key(|(k, _)| k.get_ref().len())?;
        let klen = key.get_ref().len();
        best = Some(value.span());
        cur = value;
        rest = &rest[klen..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    best
}

trait WithHint {
    fn with_hint(self, hint: &str) -> Self;
}

impl WithHint for LoadError {
    fn with_hint(self, hint: &str) -> Self {
        match self {
            LoadError::Invalid(d) => LoadError::Invalid(Box::new(d.with_hint(hint))),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Result<Project>) {
        let dir = tempfile::tempdir().unwrap();
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let r = load_project(dir.path());
        (dir, r)
    }

    fn diag(r: Result<Project>) -> Diagnostic {
        match r {
            Err(LoadError::Invalid(d)) => *d,
            other => panic!("expected a diagnostic, got {other:?}"),
        }
    }

    #[test]
    fn loads_rules_envs_and_includes() {
        let (_d, r) = project(&[
            ("kiln.toml", "[project]\nname = \"p\"\ninclude = [\"rules/*.toml\"]\n[vars]\nns = \"x\"\n[env.prod]\nreplicas = 3\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"a.yaml\"]\nlabels = { app = \"a\" }\n"),
            ("rules/b.toml", "[rule.b]\nkind = \"bundle\"\ndeps = [\"a\"]\n"),
        ]);
        let p = r.unwrap();
        assert_eq!(p.name, "p");
        assert_eq!(p.rules.len(), 2);
        let b = p.rule("b").unwrap();
        assert_eq!(b.deps[0].value.as_str(), "a");
        assert_eq!(p.file(b.loc.file).display, "rules/b.toml");
        let vars = p.vars_for(Some(&EnvName::new("prod").unwrap()));
        assert_eq!(vars["replicas"], 3);
        assert_eq!(vars["ns"], "x");
        let a = p.rule("a").unwrap();
        let loc = p.attr_location(a, "labels.app");
        let (line, col) = p.file(loc.file).line_col(loc.span.start);
        assert_eq!((line, col), (11, 18));
    }

    #[test]
    fn malformed_toml_names_file_and_line() {
        let (_d, r) = project(&[("kiln.toml", "[project]\nname = \"p\"\n[rule.a]\nkind = \n")]);
        let d = diag(r);
        assert_eq!(d.file, "kiln.toml");
        assert_eq!(d.line, 4);
        assert!(d.message.starts_with("invalid TOML"), "{}", d.message);
    }

    #[test]
    fn type_errors_name_rule() {
        let (_d, r) = project(&[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = \"a.yaml\"\n",
        )]);
        let d = diag(r);
        assert_eq!((d.line, d.rule.as_deref()), (5, Some("a")));
        assert!(
            d.message.contains("`srcs` must be an array of strings"),
            "{}",
            d.message
        );
    }

    #[test]
    fn duplicate_rules_are_rejected() {
        let (_d, r) = project(&[
            ("kiln.toml", "[project]\nname = \"p\"\ninclude = [\"more.toml\"]\n[rule.a]\nkind = \"manifest\"\n"),
            ("more.toml", "[rule.a]\nkind = \"bundle\"\n"),
        ]);
        let d = diag(r);
        assert_eq!(d.file, "more.toml");
        assert!(d.message.contains("defined twice"));
    }

    #[test]
    fn missing_kind_and_unknown_keys() {
        let (_d, r) = project(&[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.a]\nsrcs = []\n",
        )]);
        assert!(diag(r).message.contains("missing `kind`"));
        let (_d, r) = project(&[("kiln.toml", "[project]\nname = \"p\"\n[rules.a]\n")]);
        assert!(diag(r).message.contains("unknown top-level key `rules`"));
    }
}
