//! Trees for the tests of this crate and the crates above it (feature `fixtures`), so each
//! crate's tests build the same sample the same way.

use crate::{RelPath, Tree};

/// A relative path, known valid.
pub fn rel(s: &str) -> RelPath {
    RelPath::new(s).expect("a valid relative path")
}

/// The sample tree: an object, an executable and a symlink to the object. Its output hash is
/// pinned by a golden test in `tree.rs`.
pub fn sample_tree() -> Tree {
    let mut t = Tree::new();
    t.insert_file(rel("objects/a.yaml"), b"kind: A\n".to_vec(), false);
    t.insert_file(rel("bin/run"), b"#!/bin/sh\n".to_vec(), true);
    t.insert_symlink(rel("latest"), "objects/a.yaml");
    t
}

/// A tree of regular files, `(path, content)`.
pub fn tree_of(files: &[(&str, &str)]) -> Tree {
    let mut t = Tree::new();
    for (path, content) in files {
        t.insert_file(rel(path), content.as_bytes().to_vec(), false);
    }
    t
}
