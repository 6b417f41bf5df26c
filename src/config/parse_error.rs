//! `config.toml` parsed with the path of a bad key: `serde_path_to_error` tracks where in the
//! document serde was when it failed (e.g. `upstreams[1].mock.error_rate`), and toml's span
//! gives the line and column. Messages never echo the offending line.

use serde::de::DeserializeOwned;

/// Parses `text`, or says what is wrong as `KEY: reason (line N, column M)`.
pub(super) fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let document = toml::Deserializer::parse(text).map_err(|error| message(text, None, &error))?;
    serde_path_to_error::deserialize(document).map_err(|error| {
        let path = error.path().to_string();
        message(text, Some(path), error.inner())
    })
}

/// toml's own display shows the offending line as a snippet, which would echo a secret pasted
/// under a wrong key; this keeps only the reason, the key and the position.
fn message(text: &str, path: Option<String>, error: &toml::de::Error) -> String {
    let reason = error.message().trim().replace('\n', "; ");
    // The root's path displays as `.`: no key to name.
    let key = path.filter(|p| p != ".");
    let position = error.span().map(|span| {
        let before = text.get(..span.start).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
        format!(" (line {line}, column {column})")
    });
    let position = position.unwrap_or_default();
    match key {
        Some(key) => format!("{key}: {reason}{position}"),
        None => format!("{reason}{position}"),
    }
}
