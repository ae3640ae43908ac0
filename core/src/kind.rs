//! The [`Kind`] trait that every rule kind implements, and what a build gets to see.

use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::interpolate::{Reference, Scope};
use crate::name::RuleName;
use crate::relpath::RelPath;
use crate::tree::Tree;

/// An attribute with the wrong type or value. `path` is `a.b[1].c`, empty for the whole rule.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{message}")]
pub struct AttrError {
    /// Path of the offending attribute.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl AttrError {
    /// An error about attribute `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Deserializes a kind's attributes, reporting the path of the first bad value.
pub fn parse_attrs<T: DeserializeOwned>(attrs: &Value) -> Result<T, AttrError> {
    serde_path_to_error::deserialize(attrs).map_err(|e| {
        let path = e.path().to_string();
        let mut path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        // Point an unknown key at the key itself, not at its table.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next())
        {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(field);
        }
        AttrError::new(path, message)
    })
}

/// A failed build of one rule.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// An attribute is wrong.
    #[error("attribute `{}`: {}", .0.path, .0.message)]
    Attribute(AttrError),
    /// A source file is wrong; `offset` is a byte offset into it when known.
    #[error("{message}")]
    Source {
        /// The source file.
        path: RelPath,
        /// Byte offset of the problem.
        offset: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A dependency's output could not be read or is not what this kind needs.
    #[error("dependency `{rule}`: {message}")]
    Dependency {
        /// The dependency.
        rule: RuleName,
        /// What went wrong.
        message: String,
    },
    /// The build itself failed.
    #[error("{message}")]
    Failed {
        /// What went wrong.
        message: String,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl BuildError {
    /// A plain build failure.
    pub fn failed(message: impl Into<String>) -> Self {
        Self::Failed {
            message: message.into(),
            source: None,
        }
    }

    /// A build failure with a cause.
    pub fn caused(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Failed {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// A problem in a source file.
    pub fn source(path: &RelPath, offset: Option<usize>, message: impl Into<String>) -> Self {
        Self::Source {
            path: path.clone(),
            offset,
            message: message.into(),
        }
    }
}

impl From<AttrError> for BuildError {
    fn from(e: AttrError) -> Self {
        Self::Attribute(e)
    }
}

/// A source file handed to a build.
#[derive(Clone, Debug)]
pub struct LoadedSource {
    /// Path relative to the project root.
    pub path: RelPath,
    /// Its bytes.
    pub content: crate::Bytes,
    /// Whether any execute bit is set.
    pub executable: bool,
}

impl LoadedSource {
    /// The content as UTF-8 text.
    pub fn text(&self) -> Result<&str, BuildError> {
        std::str::from_utf8(&self.content)
            .map_err(|e| BuildError::source(&self.path, Some(e.valid_up_to()), "not valid UTF-8"))
    }
}

/// Read access to the outputs of a rule's dependencies.
pub trait DepOutputs: Sync {
    /// The dependencies, in the order the rule declares them.
    fn names(&self) -> Vec<RuleName>;
    /// The artifact of dependency `rule`, loaded on demand.
    fn tree(&self, rule: &RuleName) -> Result<Arc<Tree>, BuildError>;
    /// Writes the artifact of dependency `rule` under `dir` (which exists). An implementation
    /// backed by a store streams it, never holding it in memory.
    fn write_to(&self, rule: &RuleName, dir: &Path) -> Result<(), BuildError> {
        self.tree(rule)?
            .write_to(dir)
            .map_err(|e| BuildError::caused(format!("failed to stage dependency `{rule}`"), e))
    }
}

/// What a build produced.
#[derive(Debug)]
pub enum Output {
    /// A tree in memory.
    Tree(Tree),
    /// A directory on disk, inside the build's scratch directory: the store reads it in one
    /// streaming pass, so an artifact larger than memory never has to fit in it.
    Dir(std::path::PathBuf),
}

/// Source files on disk, for kinds that copy them instead of holding them in memory (see
/// [`Kind::streams_sources`]).
pub trait SourceFiles: Sync {
    /// Copies source `path` to `dest` (a new file), checking its content against the digest
    /// the derivation holds as it goes: a source changed since it was hashed is an error.
    fn copy_to(&self, path: &RelPath, dest: &Path) -> Result<(), BuildError>;

    /// Source `path` as it lies on disk, for a build that shows it read-only where it is
    /// instead of copying it: given only while the file's stat data is still the data taken
    /// before it was hashed (and was not modified within the racy window, where an edit can
    /// keep it), and while its permissions and owner are those a copy would get (`0644`, or
    /// `0755` when executable; this process's user and group), so that the build cannot tell
    /// the two apart. `None`: copy it instead.
    /// A build shown a source in place calls [`check_in_place`](Self::check_in_place) after
    /// its command has run.
    fn in_place(&self, _path: &RelPath) -> Option<InPlace> {
        None
    }

    /// Directory `dir` of the project as it lies on disk, for a build that shows it read-only
    /// where it is (one mount for all of it): given only when everything in it is a source of
    /// this rule that [`in_place`](Self::in_place) would give, the directories in it are
    /// `0755`, owned as a copy would be, and each holds a source (staging makes no empty
    /// directory), none was modified within the racy window, and nothing in it is another
    /// file system. Its `size` is that of the sources in it.
    fn in_place_dir(&self, _dir: &RelPath) -> Option<InPlace> {
        None
    }

    /// After a build was shown source `path` (or directory `path`, of
    /// [`in_place_dir`](Self::in_place_dir)) in place: an error unless it still holds the
    /// content that was hashed (a file's stat data unchanged, or else its content hashed again
    /// and found the same; a directory's entries unchanged, and each of its files so).
    fn check_in_place(&self, _path: &RelPath) -> Result<(), BuildError> {
        Ok(())
    }
}

/// A source file or a directory of sources that a build may be shown where it lies (see
/// [`SourceFiles::in_place`] and [`SourceFiles::in_place_dir`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InPlace {
    /// Its absolute path on the host.
    pub host_path: std::path::PathBuf,
    /// Its size in bytes.
    pub size: u64,
}

/// Everything a kind sees when it builds one rule. Nothing else: no clock, no absolute project
/// path, no host environment, so a build is a function of its derivation.
pub struct BuildContext<'a> {
    /// The rule being built (for messages only; it is not part of the derivation).
    pub rule: &'a RuleName,
    /// Attributes with every `${...}` resolved.
    pub attrs: &'a Value,
    /// The rule's source files, sorted by path.
    pub srcs: &'a [LoadedSource],
    /// The dependencies' outputs.
    pub deps: &'a dyn DepOutputs,
    /// The source files on disk (their content is not in `srcs` when the kind
    /// [`streams_sources`](Kind::streams_sources)).
    pub source_files: &'a dyn SourceFiles,
    /// For interpolating source file text.
    pub scope: &'a Scope<'a>,
    /// An empty private directory, for kinds whose [`Kind::needs_scratch`] is true.
    pub scratch: Option<&'a Path>,
}

/// A kind of rule: how its attributes are checked and how it builds.
pub trait Kind: Send + Sync {
    /// The name used in `kind = "..."`.
    fn name(&self) -> &'static str;
    /// The implementation version. Bump it whenever the same inputs would build a different
    /// output, so that every derivation of this kind gets a new hash.
    fn version(&self) -> u32;
    /// Checks attribute types and values once variables are substituted (dependency exports
    /// may still be unresolved `${dep...}` strings).
    fn check(&self, attrs: &Value) -> Result<(), AttrError>;
    /// The references this kind will interpolate in a source file's text; their values become
    /// part of the derivation.
    fn source_references(
        &self,
        _attrs: &Value,
        _src: &LoadedSource,
    ) -> Result<Vec<Reference>, BuildError> {
        Ok(Vec::new())
    }
    /// Whether the build needs a scratch directory on disk.
    fn needs_scratch(&self) -> bool {
        false
    }
    /// Whether a build runs a program (and so may take long). Such builds take their
    /// derivation's lock across processes, so that concurrent builds run them once; an
    /// in-process kind builds in microseconds, which is cheaper than the lock, and writing its
    /// output twice is harmless (the store is content-addressed).
    fn runs_programs(&self) -> bool {
        false
    }
    /// Whether the build copies its sources from disk ([`BuildContext::source_files`]) rather
    /// than reading them from memory: then `srcs` carry no content, and no source is ever held
    /// whole in memory (their digests are computed streaming too). Such a kind has no source
    /// references.
    fn streams_sources(&self) -> bool {
        false
    }
    /// Inputs the kind takes from the host (for `exec`: the binaries of its `tools`), made
    /// part of the derivation: `Some(attrs)` replaces the checked attributes with a version
    /// that names them by content. Called once per build, after [`Kind::check`].
    fn host_inputs(&self, _attrs: &Value) -> Result<Option<Value>, AttrError> {
        Ok(None)
    }
    /// Builds the artifact.
    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError>;
    /// Builds the artifact, as a tree in memory or as a directory the store streams in (a
    /// kind whose output is already on disk, such as `exec`'s `$out`, never holds it in
    /// memory). The default is [`Kind::build`]'s tree.
    fn build_output(&self, cx: &BuildContext<'_>) -> Result<Output, BuildError> {
        self.build(cx).map(Output::Tree)
    }
}

/// The set of kinds a project may use.
pub trait KindRegistry: Sync {
    /// The kind called `name`.
    fn get(&self, name: &str) -> Option<&dyn Kind>;
    /// Every kind's name, sorted.
    fn names(&self) -> Vec<&'static str>;
}
