//! A project file read one `[rule.NAME]` table at a time.
//!
//! Parsing a whole file into one TOML document holds every table's nodes at once: about 9 KB per
//! rule while it lasts, ten times the text (a 100,000-rule `kiln.toml` of 18 MB peaked at 1 GiB).
//! A top-level `[rule.NAME]` table is a document of its own, so it can be parsed, turned into a
//! [`Rule`](crate::project::Rule) and dropped before the next one, in parallel. Everything else
//! in the file (`[project]`, `[vars]`, `[env.NAME]`, keys before the first table) is parsed as
//! one document: the file with its rule tables blanked out, so every span stays the file's own.
//! Their line breaks go too: a blanked table is one run of spaces, one token for the parser (as
//! lines of spaces, a 100,000-rule file's rest took 150 MB of parser events).
//!
//! The split is only taken where it cannot change the meaning: when every header is a standard
//! table, and every header that mentions `rule` is exactly `[rule.NAME]` with a bare `NAME`.
//! Anything else (`[[array.tables]]`, `[rule]`, `[rule.a.b]`, `[rule."quoted"]`) parses the whole
//! file as one document, as before.

use std::ops::Range;

use toml::de::{DeArray, DeTable, DeValue};
use toml::Spanned;
use toml_parser::lexer::TokenKind;
use toml_parser::Source;

/// A file split at its rule tables.
#[derive(Debug)]
pub(super) struct Split {
    /// Each `[rule.NAME]` table: from its `[` to the next top-level header (or the end).
    pub rules: Vec<Range<usize>>,
    /// The file with those tables replaced by spaces, line breaks included (a header that
    /// follows one is still valid TOML: whitespace may precede a header).
    pub rest: String,
}

/// Splits `text` at its top-level `[rule.NAME]` tables; `None` when the file has nothing to
/// split or a header the split could misread (see the module docs).
pub(super) fn split(text: &str) -> Option<Split> {
    let mut headers: Vec<(usize, Range<usize>)> = Vec::new(); // (table start, key text)
    let mut depth = 0usize;
    let mut line_start = true;
    let mut in_header: Option<(usize, usize)> = None; // (`[` offset, key start)
    let mut last_was_open = false;
    for token in Source::new(text).lex() {
        let span = token.span();
        let (start, end) = (span.start(), span.end());
        match token.kind() {
            TokenKind::LeftSquareBracket if in_header.is_some() => {
                // `[[`: an array of tables.
                if last_was_open {
                    return None;
                }
                depth += 1;
            }
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                in_header = Some((start, end));
                last_was_open = true;
                line_start = false;
                continue;
            }
            TokenKind::RightSquareBracket if depth == 0 && in_header.is_some() => {
                let (open, key_start) = in_header.take().expect("checked");
                headers.push((open, key_start..start));
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                depth = depth.saturating_sub(1)
            }
            TokenKind::Newline => {
                line_start = depth == 0 && in_header.is_none();
                last_was_open = false;
                continue;
            }
            TokenKind::Whitespace => {
                last_was_open = false;
                continue;
            }
            _ => {}
        }
        last_was_open = false;
        line_start = false;
    }
    let mut rules = Vec::new();
    for (i, (open, key)) in headers.iter().enumerate() {
        let key_text = &text[key.clone()];
        let end = headers.get(i + 1).map_or(text.len(), |(next, _)| *next);
        match rule_header(key_text) {
            Some(()) => rules.push(*open..end),
            None if key_text.contains("rule") => return None,
            None => {}
        }
    }
    if rules.is_empty() {
        return None;
    }
    let mut rest = text.as_bytes().to_vec();
    for r in &rules {
        rest[r.clone()].fill(b' ');
    }
    let rest = String::from_utf8(rest).expect("only ASCII spaces replace bytes");
    Some(Split { rules, rest })
}

/// Whether a header's key text is `rule.NAME` with a bare NAME (whitespace around the parts
/// allowed, as TOML allows it).
fn rule_header(key: &str) -> Option<()> {
    let mut parts = key.split('.').map(str::trim);
    let (first, name) = (parts.next()?, parts.next()?);
    let bare = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    (first == "rule" && bare(name) && parts.next().is_none()).then_some(())
}

/// `table` parsed from `text[offset..]`, with every span moved to be the whole file's.
pub(super) fn shifted<'t>(table: DeTable<'t>, offset: usize) -> DeTable<'t> {
    table
        .into_iter()
        .map(|(k, v)| (shift(k, offset), shift_value(v, offset)))
        .collect()
}

fn shift<T>(s: Spanned<T>, offset: usize) -> Spanned<T> {
    let span = s.span();
    Spanned::new(span.start + offset..span.end + offset, s.into_inner())
}

fn shift_value(v: Spanned<DeValue<'_>>, offset: usize) -> Spanned<DeValue<'_>> {
    let span = v.span();
    let value = match v.into_inner() {
        DeValue::Table(t) => DeValue::Table(shifted(t, offset)),
        DeValue::Array(items) => DeValue::Array(
            items
                .into_iter()
                .map(|item| shift_value(item, offset))
                .collect::<DeArray<'_>>(),
        ),
        scalar => scalar,
    };
    Spanned::new(span.start + offset..span.end + offset, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Option<Vec<&str>> {
        let s = split(text)?;
        Some(s.rules.iter().map(|r| text[r.clone()].trim_end()).collect())
    }

    #[test]
    fn rule_tables_are_cut_at_the_next_top_level_header() {
        let text = "[project]\nname = \"p\"\n[rule.a]\nkind = \"x\"\nlist = [\n  [1],\n[2]]\n[env.prod]\nv = 1\n[ rule . b ]\nt = { k = \"[rule.c]\" }\ns = '''\n[rule.d]\n'''\n";
        let got = names(text).unwrap();
        assert_eq!(got.len(), 2);
        assert!(
            got[0].starts_with("[rule.a]") && got[0].ends_with("[2]]"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("[ rule . b ]") && got[1].ends_with("'''"),
            "{got:?}"
        );
        let s = split(text).unwrap();
        assert_eq!(s.rest.len(), text.len());
        assert!(s.rest.contains("[env.prod]") && !s.rest.contains("rule"));
        for r in &s.rules {
            assert!(s.rest[r.clone()].bytes().all(|b| b == b' '), "{r:?}");
        }
        assert_eq!(
            s.rest.split_whitespace().collect::<Vec<_>>(),
            [
                "[project]",
                "name",
                "=",
                "\"p\"",
                "[env.prod]",
                "v",
                "=",
                "1"
            ]
        );
    }

    #[test]
    fn headers_the_split_could_misread_parse_the_whole_file() {
        for text in [
            "[rule.a]\nkind = \"x\"\n[[things]]\nv = 1\n",
            "[rule.a]\nkind = \"x\"\n[rule.a.sub]\nv = 1\n",
            "[rule]\na.kind = \"x\"\n[rule.b]\nkind = \"y\"\n",
            "[rule.\"a\"]\nkind = \"x\"\n",
            "[project]\nname = \"p\"\n",
        ] {
            assert!(split(text).is_none(), "{text}");
        }
    }

    #[test]
    fn spans_of_a_table_parsed_alone_are_the_files() {
        let text = "[project]\nname = \"p\"\n[rule.a]\nkind = \"x\"\n";
        let s = split(text).unwrap();
        let r = s.rules[0].clone();
        let doc = DeTable::parse(&text[r.clone()]).unwrap().into_inner();
        let doc = shifted(doc, r.start);
        let (_, rule) = doc.iter().next().unwrap();
        let (_, body) = rule.get_ref().as_table().unwrap().iter().next().unwrap();
        let (kind_key, kind) = body.get_ref().as_table().unwrap().iter().next().unwrap();
        assert_eq!(&text[kind_key.span()], "kind");
        assert_eq!(&text[kind.span()], "\"x\"");
    }
}
