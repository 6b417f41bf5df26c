//! Combined mode: one upstream call answers a whole batch, each answer tied to its question.
//!
//! [`build`] gives every packed prompt a short id (`q1`, `q2`, …) and sends them as a JSON object
//! `{"q1": "prompt", …}`; the model is asked for a JSON object with the same ids as keys and its
//! answers as values. [`response_format`] is the JSON schema of that reply, written the way the
//! upstream takes it ([`StructuredOutput`]), so a server that enforces schemas cannot drift from
//! it. [`split`] reads the reply back by id, tolerating the wrappers real models add (code fences,
//! a sentence before the object), and answers per item: an id that is missing, duplicated or not
//! a plain answer gives that item no answer, so the caller sends *that item* alone. A reply that
//! is no JSON object at all gives no item an answer. An answer is never attached to an item by
//! position.
//!
//! Why an object keyed by id rather than an array of `{id, answer}`: the schema of an object can
//! name every id as a required property and forbid others (`additionalProperties: false`), so a
//! schema-enforcing server (OpenAI strict mode, llama.cpp grammars) produces each id exactly
//! once; JSON Schema cannot say "each id once" of an array. It is also fewer tokens per answer.
//! An array of `{id, answer}` objects is still read when a model writes one.
//!
//! The module is pure: no clock, no I/O.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::{Value, json};

use crate::core::chat::{ChatMessage, Role};

/// The first words of the system instruction; the mock upstream recognises combined calls by it.
pub const INSTRUCTION_PREFIX: &str = "You answer several independent prompts at once.";

/// The schema name sent with `json_schema` structured output.
pub const SCHEMA_NAME: &str = "ferry_combined_answers";

/// How an upstream takes a JSON schema for its reply (`structured_output` of an upstream).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredOutput {
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}`: OpenAI,
    /// vLLM, llama.cpp's `llama-server`, Ollama; Gemini (mapped to `responseJsonSchema`).
    #[default]
    JsonSchema,
    /// `{"type": "json_object", "schema": …}`: llama-cpp-python's server.
    JsonObjectSchema,
    /// No `response_format`: the instruction in the prompt only.
    None,
}

impl StructuredOutput {
    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            StructuredOutput::JsonSchema => "json_schema",
            StructuredOutput::JsonObjectSchema => "json_object_schema",
            StructuredOutput::None => "none",
        }
    }
}

impl fmt::Display for StructuredOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for StructuredOutput {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// The id of the prompt at `index` in a combined call: `q1`, `q2`, ….
pub fn id(index: usize) -> String {
    format!("q{}", index + 1)
}

/// The two messages of a combined call for `prompts`.
pub fn build<S: AsRef<str>>(prompts: &[S]) -> Vec<ChatMessage> {
    let mut user = String::from("{");
    for (i, prompt) in prompts.iter().enumerate() {
        if i > 0 {
            user.push_str(", ");
        }
        // Serializing a string cannot fail.
        let text = serde_json::to_string(prompt.as_ref()).unwrap_or_else(|_| "\"\"".into());
        user.push_str(&format!("\"{}\": {text}", id(i)));
    }
    user.push('}');
    let n = prompts.len();
    let ids = (0..n).map(id).collect::<Vec<_>>().join(", ");
    let system = format!(
        "{INSTRUCTION_PREFIX} The user message is a JSON object of {n} prompts keyed by id ({ids}). \
         Reply with only a JSON object with exactly these {n} ids as keys, each id's value your \
         complete answer to that id's prompt, as a string. Answer each prompt on its own. No other text."
    );
    vec![ChatMessage::system(system), ChatMessage::user(user)]
}

/// The JSON schema of the reply to a combined call of `n` prompts: an object with every id as a
/// required string property and no other property.
pub fn schema(n: usize) -> Value {
    let properties: serde_json::Map<String, Value> =
        (0..n).map(|i| (id(i), json!({"type": "string"}))).collect();
    let required: Vec<String> = (0..n).map(id).collect();
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

/// The `response_format` a combined call of `n` prompts sends to an upstream that takes schemas
/// as `style` says; None for [`StructuredOutput::None`].
pub fn response_format(style: StructuredOutput, n: usize) -> Option<Value> {
    match style {
        StructuredOutput::JsonSchema => Some(json!({
            "type": "json_schema",
            "json_schema": {"name": SCHEMA_NAME, "schema": schema(n), "strict": true}
        })),
        StructuredOutput::JsonObjectSchema => Some(json!({"type": "json_object", "schema": schema(n)})),
        StructuredOutput::None => None,
    }
}

/// The ids and prompts of a combined call, in order, if `messages` is one (used by the mock
/// upstream).
pub fn parse_request(messages: &[ChatMessage]) -> Option<Vec<(String, String)>> {
    let [system, user] = messages else { return None };
    if system.role != Role::System
        || !system.content.starts_with(INSTRUCTION_PREFIX)
        || user.role != Role::User
    {
        return None;
    }
    let Pairs(pairs) = serde_json::from_str(&user.content).ok()?;
    pairs
        .into_iter()
        .map(|(id, prompt)| match prompt {
            Value::String(text) => Some((id, text)),
            _ => None,
        })
        .collect()
}

/// Why no item of a combined reply could be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// No JSON object keyed by id (nor an array of `{id, answer}`) could be read from the reply.
    #[error("combined reply is not a JSON object of answers keyed by id")]
    NotAnObject,
}

/// A combined reply read back by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Per prompt, in prompt order: its answer, or None when the reply gave it none that can be
    /// trusted (its id missing, duplicated, or not answered with text).
    pub answers: Vec<Option<String>>,
    /// Ids asked for and not in the reply.
    pub missing: usize,
    /// Ids asked for that the reply answered more than once.
    pub duplicated: usize,
    /// Keys in the reply that are not ids asked for (ignored).
    pub unknown: usize,
}

impl Split {
    /// Prompts without an answer, to be sent alone.
    pub fn unanswered(&self) -> usize {
        self.answers.iter().filter(|a| a.is_none()).count()
    }
}

/// Splits a combined reply for `want` prompts into per-prompt answers by id.
pub fn split(reply: &str, want: usize) -> Result<Split, SplitError> {
    let pairs = find_pairs(reply).ok_or(SplitError::NotAnObject)?;
    let mut seen: Vec<Vec<Value>> = vec![Vec::new(); want];
    let mut unknown = 0;
    for (key, value) in pairs {
        match index_of(&key).filter(|i| *i < want) {
            Some(i) => seen[i].push(value),
            None => unknown += 1,
        }
    }
    let mut split = Split { unknown, ..Split::default() };
    for values in seen {
        let answer = match values.len() {
            0 => {
                split.missing += 1;
                None
            }
            1 => values.into_iter().next().and_then(answer_text),
            _ => {
                split.duplicated += 1;
                None
            }
        };
        split.answers.push(answer);
    }
    Ok(split)
}

/// The prompt index an id names: `q1` is 0. Only the exact form [`id`] writes is accepted.
fn index_of(key: &str) -> Option<usize> {
    let digits = key.strip_prefix('q')?;
    if digits.starts_with('0') || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_sub(1)
}

/// The (id, answer) pairs of the first readable reply shape in `reply`: a JSON object (duplicate
/// keys kept), or an array of `{id, answer}` objects; the whole text, else the span between the
/// first opening and the last closing bracket (which skips code fences and preambles).
fn find_pairs(reply: &str) -> Option<Vec<(String, Value)>> {
    let trimmed = reply.trim();
    if let Some(pairs) = pairs_of(trimmed) {
        return Some(pairs);
    }
    for (open, close) in [('{', '}'), ('[', ']')] {
        let (Some(start), Some(end)) = (trimmed.find(open), trimmed.rfind(close)) else { continue };
        if end > start
            && let Some(pairs) = pairs_of(&trimmed[start..=end])
        {
            return Some(pairs);
        }
    }
    None
}

fn pairs_of(text: &str) -> Option<Vec<(String, Value)>> {
    if text.starts_with('{') {
        return serde_json::from_str::<Pairs>(text).ok().map(|Pairs(pairs)| pairs);
    }
    if text.starts_with('[') {
        let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else { return None };
        // Every element must carry its id; an element without one cannot be placed.
        return items
            .into_iter()
            .map(|item| {
                let Value::Object(mut map) = item else { return None };
                let id = match map.remove("id")? {
                    Value::String(id) => id,
                    _ => return None,
                };
                let answer = ["answer", "response", "text", "content"].iter().find_map(|k| map.remove(*k))?;
                Some((id, answer))
            })
            .collect();
    }
    None
}

/// A JSON object read as its key/value pairs in order, duplicates kept (serde_json's map keeps
/// only the last of a duplicated key, which would hide a model answering one id twice).
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor;
        impl<'de> Visitor<'de> for PairsVisitor {
            type Value = Pairs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                let mut pairs = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Value>()? {
                    pairs.push((key, value));
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor)
    }
}

/// An answer value as text: strings as they are, numbers and booleans written out; objects,
/// arrays and null are not an answer.
fn answer_text(value: Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Object(mut map) => {
            ["answer", "response", "text", "content"].iter().find_map(|key| match map.remove(*key) {
                Some(Value::String(text)) => Some(text),
                _ => None,
            })
        }
        Value::Null | Value::Array(_) => None,
    }
}

/// Text as fidelity sampling compares it: trimmed, case-folded, inner whitespace collapsed to one
/// space, and a trailing full stop dropped.
pub fn normalise(text: &str) -> String {
    let folded = text.to_lowercase();
    let words: Vec<&str> = folded.split_whitespace().collect();
    let mut joined = words.join(" ");
    while joined.ends_with('.') {
        joined.pop();
    }
    joined
}

/// Whether a combined answer agrees with the same prompt's answer alone (normalised text).
pub fn agrees(combined: &str, alone: &str) -> bool {
    normalise(combined) == normalise(alone)
}

/// Whether `agreed` of `samples` is under `min_fidelity`: once there are `enough` samples, their
/// share; before, as soon as so many disagree that the first `enough` cannot reach it. Counted in
/// whole agreements, so 16 of 20 meets 0.8 however the product rounds.
pub fn fidelity_low(min_fidelity: f64, samples: u64, agreed: u64, enough: u64) -> bool {
    let agreed = agreed.min(samples);
    let at_best = if samples >= enough { agreed } else { enough - (samples - agreed) };
    (at_best as f64) < min_fidelity * samples.max(enough) as f64 - 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fidelity_is_low_once_the_first_twenty_cannot_reach_it_or_the_share_is_under() {
        // 0.8 of 20 is 16: four disagreements meet it, five do not — before or at twenty.
        assert!(!fidelity_low(0.8, 4, 0, 20));
        assert!(fidelity_low(0.8, 5, 0, 20));
        assert!(!fidelity_low(0.8, 20, 16, 20));
        assert!(fidelity_low(0.8, 20, 15, 20));
        // Past twenty, the share: 0.9 of 30 is 27, 0.95 of 40 is 38.
        assert!(!fidelity_low(0.9, 30, 27, 20) && fidelity_low(0.9, 30, 26, 20));
        assert!(!fidelity_low(0.95, 40, 38, 20) && fidelity_low(0.95, 40, 37, 20));
        assert!(!fidelity_low(0.9, 2, 0, 20) && fidelity_low(0.9, 3, 0, 20));
        // Nothing is low at 0; everything that disagrees at all is at 1.
        assert!(!fidelity_low(0.0, 20, 0, 20));
        assert!(fidelity_low(1.0, 1, 0, 20) && !fidelity_low(1.0, 20, 20, 20));
    }

    fn answered(texts: &[&str]) -> Vec<Option<String>> {
        texts.iter().map(|t| Some(t.to_string())).collect()
    }

    #[test]
    fn build_then_parse_request_round_trips_with_ids() {
        let messages = build(&["a \"quoted\" prompt", "second"]);
        assert_eq!(
            parse_request(&messages),
            Some(vec![("q1".into(), "a \"quoted\" prompt".into()), ("q2".into(), "second".into())])
        );
        assert_eq!(messages[1].content, r#"{"q1": "a \"quoted\" prompt", "q2": "second"}"#);
        assert!(messages[0].content.contains("exactly these 2 ids"));
    }

    #[test]
    fn ordinary_chat_is_not_a_combined_request() {
        assert_eq!(parse_request(&[ChatMessage::user("{\"q1\": \"x\"}")]), None);
        assert_eq!(parse_request(&[ChatMessage::system("be brief"), ChatMessage::user("{}")]), None);
    }

    #[test]
    fn schema_requires_every_id_and_nothing_else() {
        let schema = schema(3);
        assert_eq!(schema["required"], json!(["q1", "q2", "q3"]));
        assert_eq!(schema["additionalProperties"], json!(false));
        assert_eq!(schema["properties"]["q2"], json!({"type": "string"}));
    }

    #[test]
    fn response_format_follows_the_upstream_style() {
        let openai = response_format(StructuredOutput::JsonSchema, 2).expect("a format");
        assert_eq!(openai["type"], "json_schema");
        assert_eq!(openai["json_schema"]["name"], SCHEMA_NAME);
        assert_eq!(openai["json_schema"]["strict"], true);
        assert_eq!(openai["json_schema"]["schema"], schema(2));
        let llama_cpp_python = response_format(StructuredOutput::JsonObjectSchema, 2).expect("a format");
        assert_eq!(llama_cpp_python, json!({"type": "json_object", "schema": schema(2)}));
        assert_eq!(response_format(StructuredOutput::None, 2), None);
    }

    #[test]
    fn split_reads_answers_by_id_in_any_order() {
        let split = split(r#"{"q2": "Rome", "q1": "Paris"}"#, 2).expect("an object");
        assert_eq!(split.answers, answered(&["Paris", "Rome"]));
        assert_eq!((split.missing, split.duplicated, split.unknown), (0, 0, 0));
    }

    #[test]
    fn split_skips_code_fence_and_preamble() {
        let reply = "Here you go:\n```json\n{\"q1\": \"Paris\", \"q2\": 4}\n```";
        assert_eq!(split(reply, 2).map(|s| s.answers), Ok(answered(&["Paris", "4"])));
    }

    #[test]
    fn split_reads_an_array_of_id_answer_objects() {
        let reply = r#"[{"id": "q2", "answer": "b"}, {"id": "q1", "answer": "a"}]"#;
        assert_eq!(split(reply, 2).map(|s| s.answers), Ok(answered(&["a", "b"])));
        // An element without its id cannot be placed: the reply is not read at all.
        assert_eq!(
            split(r#"[{"answer": "a"}, {"id": "q2", "answer": "b"}]"#, 2),
            Err(SplitError::NotAnObject)
        );
    }

    #[test]
    fn missing_duplicated_and_unknown_ids_leave_only_those_items_unanswered() {
        let split =
            split(r#"{"q1": "a", "q3": "c", "q3": "c again", "q9": "?", "x": "y"}"#, 4).expect("an object");
        assert_eq!(split.answers, vec![Some("a".into()), None, None, None]);
        assert_eq!((split.missing, split.duplicated, split.unknown), (2, 1, 2));
        assert_eq!(split.unanswered(), 3);
    }

    #[test]
    fn an_answer_that_is_not_text_is_no_answer() {
        let split =
            split(r#"{"q1": null, "q2": ["a"], "q3": {"answer": "c"}, "q4": true}"#, 4).expect("an object");
        assert_eq!(split.answers, vec![None, None, Some("c".into()), Some("true".into())]);
    }

    #[test]
    fn a_bare_array_of_answers_is_not_trusted() {
        // Answers without ids could be shifted: nothing is attached by position.
        assert_eq!(split(r#"["Paris", "Rome"]"#, 2), Err(SplitError::NotAnObject));
    }

    #[test]
    fn split_refuses_prose() {
        assert_eq!(split("Paris is the capital of France.", 1), Err(SplitError::NotAnObject));
        assert_eq!(split("} then {", 1), Err(SplitError::NotAnObject));
    }

    #[test]
    fn ids_are_read_only_in_the_form_written() {
        assert_eq!(index_of("q1"), Some(0));
        assert_eq!(index_of("q12"), Some(11));
        for bad in ["q0", "q01", "Q1", "1", "q", "q1 ", "q-1"] {
            assert_eq!(index_of(bad), None, "{bad}");
        }
        assert_eq!(index_of(&id(41)), Some(41));
    }

    #[test]
    fn normalised_text_ignores_case_spacing_and_a_final_full_stop() {
        assert!(agrees("  Paris. ", "paris"));
        assert!(agrees("New\n  York", "new york"));
        assert!(!agrees("Paris", "Rome"));
        assert_eq!(normalise("  A  b\tC.. "), "a b c");
    }
}
