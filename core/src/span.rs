//! Where an attribute is written: the span of `a.b[1].c` of a rule in its TOML text, for
//! diagnostics that point at the attribute rather than at the rule.

use std::ops::Range;

use toml::de::DeTable;

/// The span of attribute `path` (`a.b[1].c`, keys may themselves contain dots) of rule `rule`
/// in TOML `text`, or of the closest ancestor found.
pub fn find_attr_span(text: &str, rule: &str, path: &str) -> Option<Range<usize>> {
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
