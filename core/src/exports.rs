//! [`Exports`]: the values an artifact exports to its dependents, in compact form.
//!
//! Every output record carries its artifact's exports, and a build holds a record per rule
//! twice (the previous root's and the new one). As a `BTreeMap<String, String>` each
//! non-empty map took a B-tree node of about 550 bytes whatever its size; most rules export
//! one or two values. This is a sorted slice of pairs, with the same map form in JSON and
//! postcard.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Exported names and values, sorted by name, each name once.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Exports(Box<[(Box<str>, Box<str>)]>);

impl Exports {
    /// The value exported as `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    /// Names and values, sorted by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The exported names, sorted.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.0.iter().map(|(k, _)| &**k)
    }

    /// Whether nothing is exported.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many values are exported.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Sets `key` to `value` (tests and tools that edit a record; builds collect them).
    pub fn insert(&mut self, key: String, value: String) {
        let mut map = self.to_map();
        map.insert(key, value);
        *self = Self::from(map);
    }

    /// As a map of owned strings.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

impl From<BTreeMap<String, String>> for Exports {
    fn from(map: BTreeMap<String, String>) -> Self {
        Self(
            map.into_iter()
                .map(|(k, v)| (k.into_boxed_str(), v.into_boxed_str()))
                .collect(),
        )
    }
}

impl<const N: usize> From<[(String, String); N]> for Exports {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

/// The last value of a name given twice wins, as in a map.
impl FromIterator<(String, String)> for Exports {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<BTreeMap<_, _>>())
    }
}

impl fmt::Debug for Exports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Exports {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Exports {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Exports {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn looks_up_sorted_names_and_the_last_value_of_a_name_wins() {
        let e = pairs(&[("name", "a"), ("hash", "h"), ("name", "b")]);
        assert_eq!(e.get("name"), Some("b"));
        assert_eq!(e.get("hash"), Some("h"));
        assert_eq!(e.get("other"), None);
        assert_eq!(e.keys().collect::<Vec<_>>(), ["hash", "name"]);
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn serializes_as_the_map_it_replaces() {
        let e = pairs(&[("z", "1"), ("a", "2")]);
        let map = e.to_map();
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            serde_json::to_string(&map).unwrap()
        );
        assert_eq!(
            postcard::to_allocvec(&e).unwrap(),
            postcard::to_allocvec(&map).unwrap()
        );
        let back: Exports = serde_json::from_str(r#"{"z":"1","a":"2"}"#).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn insert_replaces_or_adds() {
        let mut e = pairs(&[("name", "a")]);
        e.insert("name".into(), "evil".into());
        e.insert("b".into(), "c".into());
        assert_eq!(e, pairs(&[("b", "c"), ("name", "evil")]));
    }
}
