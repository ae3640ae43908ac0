//! Digests of a set's members per group-kind, recorded on the parent
//! (`kiln.dev/member-digests`), so that a plan can read a kind with few desired objects by a GET
//! per object instead of a LIST, and still know that no other member of it is left to prune.
//!
//! The digest of a kind is blake3 over its members' sorted `namespace/name`s. An apply records
//! a kind's digest only when it knows the kind's membership exactly: its first parent write
//! keeps only digests this run does not change, and its last one, after a complete run,
//! records the desired set's. An interrupted or partial run leaves the kinds it touched
//! unrecorded, and the next plan LISTs them.

use std::collections::{BTreeMap, BTreeSet};

use kiln_core::Digest;
use serde_json::Value;

use crate::desired::ObjectKey;

/// Annotation on the parent: `Kind.group=<hex>` per kind, comma-separated, sorted.
pub const ANNOTATION: &str = "kiln.dev/member-digests";

/// The digest of each kind's members among `keys`.
pub fn digests<'a>(keys: impl IntoIterator<Item = &'a ObjectKey>) -> BTreeMap<String, String> {
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for k in keys {
        by_kind
            .entry(k.group_kind.as_str())
            .or_default()
            .push(format!("{}/{}", k.namespace, k.name));
    }
    by_kind
        .into_iter()
        .map(|(gk, mut names)| {
            names.sort();
            let text: String = names.iter().map(|n| format!("{n}\n")).collect();
            (
                gk.to_owned(),
                Digest::of(text.as_bytes()).to_string()[..32].to_owned(),
            )
        })
        .collect()
}

/// Annotation on the parent: `Kind.group=<resourceVersion>` per kind, comma-separated, sorted:
/// the newest resourceVersion written by the last apply of this set that added members to the
/// kind (a create or an adoption), recorded only while no member of the kind has been pruned
/// since (a delete's answer carries no version). A watch cache that answers at this version or
/// later holds every member kiln made, so a plan may read the kind from it (`planning.rs`).
/// Updates of members leave it as it is: they change no membership, and they cost no parent
/// write.
pub const VERSIONS_ANNOTATION: &str = "kiln.dev/member-versions";

/// The digests a live parent records.
pub fn recorded(parent: &Value) -> BTreeMap<String, String> {
    annotation_map(parent, ANNOTATION)
        .map(|(gk, d)| (gk.to_owned(), d.to_owned()))
        .collect()
}

/// The resourceVersions a live parent records ([`VERSIONS_ANNOTATION`]).
pub fn recorded_versions(parent: &Value) -> BTreeMap<String, u64> {
    annotation_map(parent, VERSIONS_ANNOTATION)
        .filter_map(|(gk, v)| Some((gk.to_owned(), v.parse().ok()?)))
        .collect()
}

/// `Kind.group=value` pairs of one annotation of the parent.
fn annotation_map<'a>(parent: &'a Value, name: &str) -> impl Iterator<Item = (&'a str, &'a str)> {
    parent
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(name))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .split(',')
        .filter_map(|entry| entry.split_once('='))
}

/// The annotation's value for `values` by kind.
pub fn annotation_value<T: std::fmt::Display>(values: &BTreeMap<String, T>) -> String {
    values
        .iter()
        .map(|(gk, d)| format!("{gk}={d}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The kinds an apply adds members to and prunes members of.
pub struct Changing<'a> {
    /// Kinds with a create or an adoption.
    pub joining: BTreeSet<&'a str>,
    /// Kinds with a delete.
    pub pruning: BTreeSet<&'a str>,
    /// A run over some rules only (`--rule`).
    pub partial: bool,
}

impl Changing<'_> {
    /// The versions that hold however far the apply gets, for its first parent write (which
    /// adding members makes anyway): those of the kinds it adds no member to. A run stopped
    /// after a create would otherwise leave a version older than it, and the next plan could
    /// read the kind from a cache without the new member, and miss it when it is to be pruned.
    pub fn versions_kept(&self, recorded: BTreeMap<String, u64>) -> BTreeMap<String, u64> {
        recorded
            .into_iter()
            .filter(|(gk, _)| !self.joining.contains(gk.as_str()))
            .collect()
    }

    /// The versions after a run that got to its end, for its last parent write: the kept ones
    /// less the kinds it pruned, and for each kind it added members to and pruned none of, the
    /// newest version it wrote (`written`; absent when a write's answer had no numeric one).
    pub fn versions_after(
        &self,
        kept: BTreeMap<String, u64>,
        written: &BTreeMap<String, Option<u64>>,
    ) -> BTreeMap<String, u64> {
        let mut versions: BTreeMap<String, u64> = kept
            .into_iter()
            .filter(|(gk, _)| !self.pruning.contains(gk.as_str()))
            .collect();
        versions.extend(
            written
                .iter()
                .filter(|(gk, _)| {
                    self.joining.contains(gk.as_str()) && !self.pruning.contains(gk.as_str())
                })
                .filter_map(|(gk, v)| Some((gk.clone(), (*v)?))),
        );
        versions
    }

    /// The digests that hold however far the apply gets, for its first parent write. A complete
    /// run: the desired members of each kind it only adds to (the next plan's GETs find any
    /// still missing), the recorded ones of each kind it only prunes (what is left is a subset),
    /// none where it does both. A partial run: the recorded ones of the kinds it adds nothing to.
    pub fn digests_kept(
        &self,
        recorded: BTreeMap<String, String>,
        desired: &BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        if self.partial {
            return recorded
                .into_iter()
                .filter(|(gk, _)| !self.joining.contains(gk.as_str()))
                .collect();
        }
        let mut kept: BTreeMap<String, String> = desired
            .iter()
            .filter(|(gk, _)| !self.pruning.contains(gk.as_str()))
            .map(|(gk, d)| (gk.clone(), d.clone()))
            .collect();
        kept.extend(recorded.into_iter().filter(|(gk, _)| {
            self.pruning.contains(gk.as_str()) && !self.joining.contains(gk.as_str())
        }));
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(gk: &str, ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            group_kind: gk.into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn digests_depend_on_the_members_not_their_order_and_read_back() {
        let a = [key("ConfigMap", "shop", "a"), key("ConfigMap", "shop", "b")];
        let b = [key("ConfigMap", "shop", "b"), key("ConfigMap", "shop", "a")];
        assert_eq!(digests(&a), digests(&b));
        assert_ne!(digests(&a), digests(&a[..1]));
        let parent =
            json!({"metadata": {"annotations": {ANNOTATION: annotation_value(&digests(&a))}}});
        assert_eq!(recorded(&parent), digests(&a));
        assert!(recorded(&json!({})).is_empty());
    }

    #[test]
    fn an_apply_keeps_only_digests_that_hold_at_every_step() {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let recorded = map(&[("A", "a0"), ("B", "b0"), ("C", "c0")]);
        let desired = map(&[("A", "a1"), ("B", "b1"), ("C", "c1")]);
        let full = Changing {
            joining: ["A", "C"].into(),
            pruning: ["B", "C"].into(),
            partial: false,
        };
        // A only grows: desired; B only shrinks: recorded; C does both: none.
        assert_eq!(
            full.digests_kept(recorded.clone(), &desired),
            map(&[("A", "a1"), ("B", "b0")])
        );
        let partial = Changing {
            partial: true,
            ..full
        };
        assert_eq!(
            partial.digests_kept(recorded, &desired),
            map(&[("B", "b0")])
        );
    }

    #[test]
    fn versions_follow_the_members_added_and_go_with_a_prune() {
        let changing = Changing {
            joining: ["A", "B", "C"].into(),
            pruning: ["C", "D"].into(),
            partial: false,
        };
        let recorded: BTreeMap<String, u64> = [("A", 5), ("B", 6), ("C", 7), ("D", 8), ("E", 9)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        // While the run goes: not the kinds it adds members to.
        let kept = changing.versions_kept(recorded);
        assert_eq!(kept.keys().collect::<Vec<_>>(), ["D", "E"]);
        // After it: the newest write of each kind it added to and pruned nothing of (B's
        // answers had no numeric version, C was pruned too), no pruned kind (D), and the
        // kinds it only updated (F) as they were.
        let written: BTreeMap<String, Option<u64>> = [
            ("A", Some(20)),
            ("B", None),
            ("C", Some(22)),
            ("F", Some(23)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let after = changing.versions_after(kept, &written);
        assert_eq!(
            after.into_iter().collect::<Vec<_>>(),
            [("A".to_owned(), 20), ("E".to_owned(), 9)]
        );
        let parent =
            json!({"metadata": {"annotations": {VERSIONS_ANNOTATION: "A=20,E=9,F=opaque"}}});
        assert_eq!(recorded_versions(&parent).len(), 2);
    }
}
