//! toml's parse errors as `ConfigError::Parse` messages: the dotted key path and the line and
//! column, without echoing the offending line.

use std::collections::BTreeMap;

/// A parse error as `KEY: reason (line N, column M)`. toml's own display shows the offending
/// line as a snippet, which would echo a secret pasted under a wrong key, and names the key only
/// inside that snippet.
pub(super) fn parse_message(text: &str, error: &toml::de::Error) -> String {
    let reason = error.message().trim().replace('\n', "; ");
    let Some(span) = error.span() else { return reason };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
    match key_path(text, line) {
        Some(key) => format!("{key}: {reason} (line {line}, column {column})"),
        None => format!("{reason} (line {line}, column {column})"),
    }
}

/// The dotted path of the key on `line` (1-based), e.g. `upstreams[1].mock.error_rate`, read
/// from the table headers above it. Best effort: `None` when the line holds no key.
fn key_path(text: &str, line: usize) -> Option<String> {
    let mut table = String::new();
    let mut arrays: BTreeMap<String, usize> = BTreeMap::new();
    for (index, raw) in text.lines().take(line).enumerate() {
        let content = raw.trim();
        let is_error_line = index + 1 == line;
        if let Some(header) = content.strip_prefix("[[") {
            let name = unquote(header.split("]]").next().unwrap_or_default());
            let count = arrays.entry(name.clone()).and_modify(|n| *n += 1).or_insert(0);
            table = format!("{name}[{count}]");
        } else if let Some(header) = content.strip_prefix('[') {
            let name = unquote(header.split(']').next().unwrap_or_default());
            table = match arrays.iter().rev().find(|(array, _)| name.starts_with(&format!("{array}."))) {
                Some((array, count)) => format!("{array}[{count}]{}", &name[array.len()..]),
                None => name,
            };
        } else if is_error_line && let Some((key, _)) = content.split_once('=') {
            let key = unquote(key);
            return Some(if table.is_empty() { key } else { format!("{table}.{key}") });
        }
    }
    (!table.is_empty()).then_some(table)
}

/// A dotted key without quotes or the spaces around its dots.
fn unquote(key: &str) -> String {
    key.split('.').map(|part| part.trim().trim_matches(['"', '\''])).collect::<Vec<_>>().join(".")
}
