//! The `from = [...]` attribute: files of dependencies' outputs taken as inputs.

use kiln_core::kind::{AttrError, BuildContext, BuildError};
use kiln_core::tree::Entry;
use kiln_core::{RelPath, RuleName};

/// One file of a dependency's output.
pub struct DepFile {
    /// The dependency.
    pub rule: RuleName,
    /// The file's path in that output.
    pub path: RelPath,
    /// Its bytes.
    pub content: kiln_core::Bytes,
}

/// Every regular file (outside `.kiln/`) of the dependencies named in `from`, in order. Each must
/// also be listed in `deps`.
pub fn files_from(cx: &BuildContext<'_>, from: &[String]) -> Result<Vec<DepFile>, BuildError> {
    let mut out = Vec::new();
    for dep in from {
        let rule =
            RuleName::new(dep.as_str()).map_err(|e| AttrError::new("from", e.to_string()))?;
        if !cx.deps.names().contains(&rule) {
            return Err(
                AttrError::new("from", format!("`{dep}` must also be listed in `deps`")).into(),
            );
        }
        let tree = cx.deps.tree(&rule)?;
        for (path, entry) in tree.iter() {
            if path.as_str().starts_with(".kiln/") {
                continue;
            }
            if let Entry::File { content, .. } = entry {
                out.push(DepFile {
                    rule: rule.clone(),
                    path: path.clone(),
                    content: content.clone(),
                });
            }
        }
    }
    Ok(out)
}
