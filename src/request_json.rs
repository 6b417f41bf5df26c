//! Request JSON parsed in one pass into a typed value, and parse errors worded without the
//! caller's values.
//!
//! Every door that reads JSON from a caller (the HTTP bodies, each line of a batch input) goes
//! through [`parse`]: serde reads the bytes once, straight into the endpoint's struct, and
//! `serde_path_to_error` records where it was when it failed, so the field is named by the
//! parser itself — no second pass, no re-parse per key, time linear in the body's size.
//!
//! serde's own messages quote the value they refused (`invalid type: string "…", expected u32`),
//! and that value may be a prompt or a key sent in the wrong field. [`JsonError`] keeps only:
//! the field's path as the schema names it (a caller-chosen name, such as an unknown field or a
//! map key, cut to [`MAX_NAME_BYTES`] and escaped), what was expected, and what kind of value
//! was sent with its length in bytes.

use std::fmt::Write as _;

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

/// Longest caller-chosen name (an unknown field, a map key) shown in an error, in bytes.
pub const MAX_NAME_BYTES: usize = 64;

/// A body or line that did not parse, worded without any value it held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JsonError {
    /// The field, as a path (`messages[3].content`); `None` for a syntax error or the whole body.
    pub param: Option<String>,
    /// What is wrong and what would be valid.
    pub message: String,
}

/// Parses `bytes` as one JSON value into `T`, in one pass.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, JsonError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(describe)?;
    deserializer.end().map_err(|error| JsonError { param: None, message: syntax(&error) })?;
    Ok(value)
}

/// Converts an already parsed JSON value into `T`, naming the failing field the same way.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, JsonError> {
    serde_path_to_error::deserialize(value).map_err(describe)
}

/// A caller-chosen name as it may appear in a message: escaped (no quote, control character or
/// newline comes through raw), and cut to [`MAX_NAME_BYTES`] with `…` when longer.
pub fn shown_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let escaped: String = c.escape_debug().collect();
        let escaped = if c == '`' { "\\`".to_string() } else { escaped };
        if out.len() + escaped.len() > MAX_NAME_BYTES {
            out.push('…');
            break;
        }
        out.push_str(&escaped);
    }
    out
}

/// A serde message from another format (a query string), worded the same way: the field it
/// names (an unknown one cut and escaped) as `param`, no value.
pub fn from_message(text: &str) -> JsonError {
    for prefix in ["unknown field `", "missing field `"] {
        if let Some(rest) = text.strip_prefix(prefix) {
            let (name, expected) = split_named(rest);
            let name = shown_name(&name);
            let what = prefix.trim_end_matches(" `");
            let message = match expected {
                Some(expected) => format!("{what} `{name}`; {expected}"),
                None => format!("{what} `{name}`"),
            };
            return JsonError { param: Some(name), message };
        }
    }
    JsonError { param: None, message: data_detail(text).0 }
}

fn describe(error: serde_path_to_error::Error<serde_json::Error>) -> JsonError {
    let mut path = path_of(error.path());
    let inner = error.into_inner();
    if !inner.is_data() {
        return JsonError { param: None, message: syntax(&inner) };
    }
    let full = inner.to_string();
    let suffix = format!(" at line {} column {}", inner.line(), inner.column());
    let text = full.strip_suffix(&suffix).unwrap_or(&full);
    let (detail, missing) = data_detail(text);
    if let Some(name) = missing {
        // A missing field is reported at the object that lacks it; name the field itself.
        path = join(&path, &shown_name(&name));
    }
    let message = if path.is_empty() {
        format!("invalid JSON body: {detail}")
    } else {
        format!("invalid JSON body: `{path}`: {detail}")
    };
    JsonError { param: (!path.is_empty()).then_some(path), message }
}

/// A syntax error's message: serde_json words these without the input's text.
fn syntax(error: &serde_json::Error) -> String {
    if error.is_data() {
        return format!("invalid JSON: {}", without_values(&error.to_string()));
    }
    format!("invalid JSON: {error}")
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

/// `messages[3].content`: keys are shown through [`shown_name`], since a map's keys (and an
/// unknown field's name) are the caller's.
fn path_of(path: &serde_path_to_error::Path) -> String {
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                let _ = write!(out, "[{index}]");
            }
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shown_name(key));
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&shown_name(variant));
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// The message for one of serde's data errors, and the name of the missing field if that is what
/// it was (serde reports it at the object that lacks it). The wording follows serde's own (`serde::de::Error`'s defaults), minus the value.
fn data_detail(text: &str) -> (String, Option<String>) {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = text.strip_prefix(prefix)
            && let Some(at) = rest.rfind(", expected ")
        {
            let expected = &rest[at + ", expected ".len()..];
            let sent = sent_kind(&rest[..at]);
            let what = if prefix == "invalid type: " { "expected" } else { "expected a value that is" };
            return (format!("{what} {expected}, got {sent}"), None);
        }
    }
    if let Some(rest) = text.strip_prefix("invalid length ") {
        return (format!("invalid length {}", without_values(rest)), None);
    }
    if let Some(rest) = text.strip_prefix("unknown field `") {
        // serde_path_to_error's path already ends with the unknown field's name.
        let (_, expected) = split_named(rest);
        let message = match expected {
            Some(expected) => format!("unknown field; {expected}"),
            None => "unknown field".to_string(),
        };
        return (message, None);
    }
    if let Some(rest) = text.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`').to_string();
        return (format!("missing field `{}`", shown_name(&name)), Some(name));
    }
    if let Some(rest) = text.strip_prefix("unknown variant `") {
        let (name, expected) = split_named(rest);
        let message = format!("unknown value of {} bytes", name.len());
        return (expected.map_or(message.clone(), |expected| format!("{message}; {expected}")), None);
    }
    (without_values(text), None)
}

/// Splits ``name`, expected one of …`` (after the opening backtick) into the name and the
/// `expected …` part. serde writes the name raw, so the last "`, " is the end of the name.
fn split_named(rest: &str) -> (String, Option<String>) {
    for marker in ["`, expected ", "`, there are no "] {
        if let Some(at) = rest.rfind(marker) {
            return (rest[..at].to_string(), Some(rest[at + 3..].to_string()));
        }
    }
    (rest.trim_end_matches('`').to_string(), None)
}

/// What kind of value serde refused, from its `Unexpected` text (`string "…"`, ``integer `42` ``),
/// with a string's length in bytes instead of its text.
fn sent_kind(unexpected: &str) -> String {
    if let Some(quoted) = unexpected.strip_prefix("string ") {
        return format!("a string of {} bytes", debug_string_len(quoted));
    }
    let kinds = [
        ("integer `", "an integer"),
        ("floating point `", "a number"),
        ("boolean `", "a boolean"),
        ("character `", "a character"),
    ];
    for (prefix, kind) in kinds {
        if unexpected.starts_with(prefix) {
            return kind.to_string();
        }
    }
    // serde's words for JSON's null, arrays and objects.
    match unexpected {
        "unit value" => return "null".to_string(),
        "sequence" => return "an array".to_string(),
        "map" => return "an object".to_string(),
        _ => {}
    }
    if unexpected.contains(['`', '"']) { "a value".to_string() } else { unexpected.to_string() }
}

/// The length in bytes of the string a Rust `{:?}` rendering (`"a\"b"`) stands for.
fn debug_string_len(quoted: &str) -> usize {
    let inner = quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(quoted);
    let mut len = 0;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            len += c.len_utf8();
            continue;
        }
        match chars.next() {
            Some('u') => {
                // \u{1f600}
                let hex: String = chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                len += u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32).map_or(1, char::len_utf8);
            }
            Some(_) => len += 1,
            None => {}
        }
    }
    len
}

/// A message with every quoted or back-quoted part replaced by `…`: for messages of other
/// shapes (a type's own `Deserialize` error), which may quote what they refused.
pub fn without_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '"' || c == '`' {
            let close = c;
            let mut escaped = false;
            for c in chars.by_ref() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if close == '"' => escaped = true,
                    c if c == close => break,
                    _ => {}
                }
            }
            out.push('…');
            out.push(close);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        count: Option<u32>,
        items: Option<Vec<Item>>,
        tags: Option<BTreeMap<String, u8>>,
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        text: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
    }

    fn error(text: &str) -> JsonError {
        match parse::<Body>(text.as_bytes()) {
            Err(error) => error,
            Ok(body) => panic!("expected an error for {text}, got {body:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_its_path_and_not_its_value() {
        let e = error(r#"{"name": "x", "items": [{"text": "a"}, {"text": 42}]}"#);
        assert_eq!(e.param.as_deref(), Some("items[1].text"));
        assert_eq!(e.message, "invalid JSON body: `items[1].text`: expected a string, got an integer");
        let e = error(r#"{"name": "x", "count": "secret \"prompt\" é"}"#);
        assert_eq!(e.param.as_deref(), Some("count"));
        assert!(!e.message.contains("secret"), "{}", e.message);
        assert!(e.message.ends_with("got a string of 18 bytes"), "{}", e.message);
        let e = error(r#"{"name": "x", "tags": {"k": 900}}"#);
        assert_eq!(e.param.as_deref(), Some("tags.k"));
        assert!(!e.message.contains("900"), "{}", e.message);
    }

    #[test]
    fn unknown_fields_and_variants_are_named_short_and_escaped() {
        let e = error(r#"{"name": "x", "secret\"field": 1}"#);
        assert_eq!(e.param.as_deref(), Some("secret\\\"field"));
        let long = "k".repeat(500);
        let e = error(&format!(r#"{{"name": "x", "{long}": 1}}"#));
        let param = e.param.unwrap_or_default();
        assert!(param.len() <= MAX_NAME_BYTES + '…'.len_utf8(), "{param}");
        assert!(!e.message.contains(&long));
        let e = error(r#"{"name": "x", "mode": "secret-mode"}"#);
        assert_eq!(e.param.as_deref(), Some("mode"));
        assert!(!e.message.contains("secret"), "{}", e.message);
        assert!(e.message.contains("`fast`"), "{}", e.message);
        let e = error(r#"{"count": 1}"#);
        assert_eq!(e.param.as_deref(), Some("name"));
        assert!(e.message.contains("missing field `name`"), "{}", e.message);
    }

    #[test]
    fn syntax_errors_name_no_field() {
        let e = error(r#"{"name": "secret"#);
        assert_eq!(e.param, None);
        assert!(!e.message.contains("secret"), "{}", e.message);
        let e = error(r#"{"name": "x"} trailing-secret"#);
        assert!(!e.message.contains("secret"), "{}", e.message);
        assert_eq!(error("true").param, None);
    }

    #[test]
    fn helpers_drop_values() {
        assert_eq!(without_values(r#"bad "a\"b" and `c`"#), "bad \"…\" and `…`");
        assert_eq!(debug_string_len(r#""a\"b\n\u{e9}""#), 6);
        assert_eq!(shown_name("a\nb`"), "a\\nb\\`");
    }
}
