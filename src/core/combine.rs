//! Combined mode: one upstream call answers a whole batch (seed 002).
//!
//! [`build`] packs prompts into a system instruction plus a user message holding a JSON array of
//! the prompts; the model is asked for a JSON array of exactly as many answers. [`split`] reads the
//! answer back, tolerating the wrappers real models add (code fences, a sentence before the array).
//! A reply that still does not parse, or has the wrong length, is an error: the caller then sends
//! the items one by one, so nothing is lost to a bad reply.

use serde_json::Value;

use crate::core::chat::{ChatMessage, Role};

/// The first words of the system instruction; the mock upstream recognises combined calls by it.
pub const INSTRUCTION_PREFIX: &str = "You answer several independent prompts at once.";

/// The two messages of a combined call for `prompts`.
pub fn build<S: AsRef<str>>(prompts: &[S]) -> Vec<ChatMessage> {
    let list: Vec<&str> = prompts.iter().map(|p| p.as_ref()).collect();
    let user = serde_json::to_string(&list).unwrap_or_else(|_| "[]".into());
    let system = format!(
        "{INSTRUCTION_PREFIX} The user message is a JSON array of {n} prompts. Reply with only a JSON \
         array of exactly {n} strings: element i is your complete answer to prompt i. No other text.",
        n = list.len()
    );
    vec![ChatMessage::system(system), ChatMessage::user(user)]
}

/// The prompts of a combined call, if `messages` is one (used by the mock upstream).
pub fn parse_request(messages: &[ChatMessage]) -> Option<Vec<String>> {
    let [system, user] = messages else { return None };
    if system.role != Role::System
        || !system.content.starts_with(INSTRUCTION_PREFIX)
        || user.role != Role::User
    {
        return None;
    }
    serde_json::from_str(&user.content).ok()
}

/// Why a combined reply could not be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No JSON array could be read from the reply.
    #[error("combined reply is not a JSON array")]
    NotAnArray,
    /// The array has the wrong number of answers.
    #[error("combined reply has {got} answers for {want} prompts")]
    WrongCount {
        /// Answers found.
        got: usize,
        /// Prompts sent.
        want: usize,
    },
}

/// Splits a combined reply into `want` answers, in prompt order.
pub fn split(reply: &str, want: usize) -> Result<Vec<String>, SplitError> {
    let array = find_array(reply).ok_or(SplitError::NotAnArray)?;
    if array.len() != want {
        return Err(SplitError::WrongCount { got: array.len(), want });
    }
    Ok(array.into_iter().map(answer_text).collect())
}

/// The first parseable JSON array in `reply`: the whole text, else the span from the first `[`
/// to the last `]` (which skips code fences and preambles).
fn find_array(reply: &str) -> Option<Vec<Value>> {
    let trimmed = reply.trim();
    if let Ok(Value::Array(items)) = serde_json::from_str(trimmed) {
        return Some(items);
    }
    let start = trimmed.find('[')?;
    let end = trimmed.rfind(']')?;
    if end <= start {
        return None;
    }
    match serde_json::from_str(&trimmed[start..=end]) {
        Ok(Value::Array(items)) => Some(items),
        _ => None,
    }
}

/// An array element as answer text: strings as they are, objects by their likely answer field.
fn answer_text(value: Value) -> String {
    match value {
        Value::String(text) => text,
        Value::Object(mut map) => ["answer", "response", "text", "content"]
            .iter()
            .find_map(|key| match map.remove(*key) {
                Some(Value::String(text)) => Some(text),
                _ => None,
            })
            .unwrap_or_else(|| Value::Object(map).to_string()),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_then_parse_request_round_trips() {
        let messages = build(&["a \"quoted\" prompt", "second"]);
        assert_eq!(
            parse_request(&messages),
            Some(vec!["a \"quoted\" prompt".to_string(), "second".to_string()])
        );
        assert!(messages[0].content.contains("exactly 2 strings"));
    }

    #[test]
    fn ordinary_chat_is_not_a_combined_request() {
        assert_eq!(parse_request(&[ChatMessage::user("[\"x\"]")]), None);
        assert_eq!(parse_request(&[ChatMessage::system("be brief"), ChatMessage::user("[\"x\"]")]), None);
    }

    #[test]
    fn split_reads_plain_array() {
        assert_eq!(split(r#"["one", "two"]"#, 2), Ok(vec!["one".into(), "two".into()]));
    }

    #[test]
    fn split_skips_code_fence_and_preamble() {
        let reply = "Here you go:\n```json\n[\"Paris\", \"Rome\"]\n```";
        assert_eq!(split(reply, 2), Ok(vec!["Paris".into(), "Rome".into()]));
    }

    #[test]
    fn split_takes_answer_fields_and_numbers() {
        let reply = r#"[{"answer": "4"}, 5, {"id": 1}]"#;
        assert_eq!(split(reply, 3), Ok(vec!["4".into(), "5".into(), r#"{"id":1}"#.into()]));
    }

    #[test]
    fn split_refuses_wrong_count() {
        assert_eq!(split(r#"["only one"]"#, 2), Err(SplitError::WrongCount { got: 1, want: 2 }));
    }

    #[test]
    fn split_refuses_prose() {
        assert_eq!(split("Paris is the capital of France.", 1), Err(SplitError::NotAnArray));
        assert_eq!(split("] then [", 1), Err(SplitError::NotAnArray));
    }
}
