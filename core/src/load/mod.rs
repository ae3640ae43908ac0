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

mod chunks;
mod rules;
mod values;

use rules::{add_rules, insert_rule, parse_rule_file, parse_rule_tables};
use values::{expect_str, expect_str_list, expect_table, parse_toml, vars_table};

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
    /// Parse rule tables one at a time where a file allows it (`chunks`); off only in tests
    /// that compare with the whole-file parse.
    split_rule_tables: bool,
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

/// What `kiln.toml` itself says.
struct MainFile {
    name: Option<String>,
    includes: Vec<Located<String>>,
    defaults: BTreeMap<String, Value>,
    envs: BTreeMap<EnvName, Env>,
    rules: BTreeMap<RuleName, Rule>,
}

/// Parses `kiln.toml`: `[project]`, `[vars]`, `[env.NAME]` and its `[rule.NAME]` tables.
fn parse_main_file(loader: &Loader, main_id: FileId) -> Result<MainFile> {
    let text = loader.files[main_id].text.clone();
    // Rule tables one at a time where the file allows it (chunks.rs), the rest as one document.
    let split = loader
        .split_rule_tables
        .then(|| chunks::split(&text))
        .flatten();
    let doc = parse_toml(
        loader,
        main_id,
        split.as_ref().map_or(&text[..], |s| &s.rest),
    )?;
    let loader = &loader;
    let mut name = None;
    let mut includes: Vec<Located<String>> = Vec::new();
    let mut defaults = BTreeMap::new();
    let mut envs = BTreeMap::new();
    let mut rules: BTreeMap<RuleName, Rule> = BTreeMap::new();

    for (key, value) in doc.get_ref() {
        let k = key.get_ref().as_ref();
        match k {
            "project" => {
                let t = expect_table(loader, main_id, value, None, "[project]")?;
                for (pk, pv) in t {
                    match pk.get_ref().as_ref() {
                        "name" => {
                            name = Some(expect_str(loader, main_id, pv, None, "project.name")?)
                        }
                        "description" => {
                            expect_str(loader, main_id, pv, None, "project.description")?;
                        }
                        "include" => {
                            includes =
                                expect_str_list(loader, main_id, pv, None, "project.include")?
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
                let t = expect_table(loader, main_id, value, None, "[vars]")?;
                defaults = vars_table(loader, main_id, t)?;
            }
            "env" => {
                let t = expect_table(loader, main_id, value, None, "[env]")?;
                for (ek, ev) in t {
                    let env_name = EnvName::new(ek.get_ref().as_ref())
                        .map_err(|e| loader.diag(main_id, ek.span(), None, e.to_string()))?;
                    let vt = expect_table(loader, main_id, ev, None, "an environment")?;
                    let vars = vars_table(loader, main_id, vt)?;
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
            "rule" => add_rules(loader, main_id, value, &mut rules)?,
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
    drop(doc);
    if let Some(split) = &split {
        for rule in parse_rule_tables(loader, main_id, &text, &split.rules) {
            insert_rule(loader, &mut rules, rule?)?;
        }
    }
    Ok(MainFile {
        name,
        includes,
        defaults,
        envs,
        rules,
    })
}

/// Loads the project in `dir`.
pub fn load_project(dir: &Path) -> Result<Project> {
    load_project_with(dir, true)
}

fn load_project_with(dir: &Path, split_rule_tables: bool) -> Result<Project> {
    let root = dir.to_path_buf();
    let main = root.join(PROJECT_FILE);
    if !main.is_file() {
        return Err(LoadError::NoProject(root));
    }
    let mut loader = Loader {
        root: root.clone(),
        files: Vec::new(),
        split_rule_tables,
    };
    let main_id = loader.read(&main)?;
    let MainFile {
        name,
        includes,
        defaults,
        envs,
        mut rules,
    } = parse_main_file(&loader, main_id)?;

    let name = name.ok_or_else(|| {
        loader
            .diag(main_id, 0..0, None, "missing `[project] name`")
            .with_hint("add:\n[project]\nname = \"my-platform\"")
    })?;

    let (include_ids, listed_dirs) = read_includes(&mut loader, main_id, &includes)?;
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
    check_rule_envs(&loader, &rules, &envs)?;
    Ok(Project {
        name,
        root,
        files: loader.files,
        listed_dirs,
        defaults,
        envs,
        rules: rules.into_values().collect(),
    })
}

/// Reads the files that `[project] include` globs match (confined to the project); also gives
/// the directories the globs listed.
fn read_includes(
    loader: &mut Loader,
    main_id: FileId,
    includes: &[Located<String>],
) -> Result<(Vec<FileId>, Vec<crate::sources::ListedDir>)> {
    let root = loader.root.clone();
    let mut include_ids = Vec::new();
    let confinement = if includes.is_empty() {
        None
    } else {
        Some(
            crate::sources::Confinement::new(&root)
                .map_err(|e| loader.diag(main_id, 0..0, None, format!("include: {e}")))?,
        )
    };
    for inc in includes {
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
    let listed = confinement.map(|c| c.take_listed()).unwrap_or_default();
    Ok((include_ids, listed))
}

/// `envs` must name environments the project defines: a misspelling would silently drop the
/// rule from every environment.
fn check_rule_envs(
    loader: &Loader,
    rules: &BTreeMap<RuleName, Rule>,
    envs: &BTreeMap<EnvName, Env>,
) -> Result<()> {
    for rule in rules.values() {
        for (i, e) in rule.envs.iter().flatten().enumerate() {
            if !envs.contains_key(e) {
                let file = rule.loc.file;
                let span = crate::span::find_attr_span(
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
    Ok(())
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
    fn rule_tables_parsed_one_at_a_time_load_as_the_whole_file_does() {
        let rules = concat!(
            "[rule.a]\nkind = \"manifest\"  # c\nsrcs = [\n  \"a.yaml\",\n]\n",
            "labels = { app = \"a\", note = \"[rule.x]\" }\nmeta.deep.key = 1\n\n",
            "[env.prod]\nreplicas = 3\n",
            "[ rule . b ]\nkind = \"bundle\"\ndeps = [\"a\"]\ntext = '''\n[rule.c]\n'''\n",
        );
        let split_form = format!("[project]\nname = \"p\"\n{rules}");
        // A quoted rule name makes the loader parse the file whole (chunks.rs).
        let whole_form = format!("{split_form}[rule.\"z\"]\nkind = \"bundle\"\n");
        assert!(chunks::split(&split_form).is_some());
        assert!(chunks::split(&whole_form).is_none());
        let (_a, split) = project(&[("kiln.toml", &split_form)]);
        let (_b, whole) = project(&[("kiln.toml", &whole_form)]);
        let (split, whole) = (split.unwrap(), whole.unwrap());
        assert_eq!(split.rules.len(), 2);
        for name in ["a", "b"] {
            let (s, w) = (split.rule(name).unwrap(), whole.rule(name).unwrap());
            // Attributes, sources, dependencies and every location, byte for byte.
            assert_eq!(format!("{s:?}"), format!("{w:?}"));
        }
        assert_eq!(format!("{:?}", split.envs), format!("{:?}", whole.envs));
        // An error inside a rule table points into the file.
        let bad = split_form.replace("deps = [\"a\"]", "deps = 3");
        let d = diag(project(&[("kiln.toml", &bad)]).1);
        assert_eq!(
            (d.line, d.rule.as_deref()),
            (15, Some("b")),
            "{}",
            d.message
        );
    }

    /// Every project in the repository (the example platforms and the corpus of public
    /// manifests) loads the same with rule tables parsed one at a time as parsed whole.
    #[test]
    fn the_repositorys_projects_load_the_same_split_and_whole() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let (mut checked, mut taken) = (0, 0);
        for parent in ["examples", "tests/corpus"] {
            for entry in std::fs::read_dir(root.join(parent)).unwrap() {
                let dir = entry.unwrap().path();
                if !dir.join(PROJECT_FILE).is_file() {
                    continue;
                }
                let split = load_project_with(&dir, true).unwrap();
                let whole = load_project_with(&dir, false).unwrap();
                assert_eq!(split.rules.len(), whole.rules.len(), "{}", dir.display());
                for (s, w) in split.rules.iter().zip(&whole.rules) {
                    assert_eq!(format!("{s:?}"), format!("{w:?}"), "{}", dir.display());
                }
                assert_eq!(format!("{:?}", split.envs), format!("{:?}", whole.envs));
                assert_eq!(split.defaults, whole.defaults);
                checked += 1;
                // The split is taken in the main file or in an included one.
                taken += usize::from(split.files.iter().any(|f| chunks::split(&f.text).is_some()));
            }
        }
        assert!(checked >= 8, "{checked} projects");
        assert!(taken >= 8, "the split was taken in {taken} of {checked}");
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
