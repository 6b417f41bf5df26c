//! `POST /api/v1/prompt` and `POST /api/v1/prompts` (seed 000): prompts through the bulk lane,
//! which follows `[batching]` batch size and delay, so the config endpoints steer them live.
//!
//! A prompt that fails upstream is answered in its slot as
//! `{"status": "error", "response": "", "error": "…"}` with HTTP 200 — the request itself was
//! valid and served; only bad input (400), a full queue (429) or a shutdown (503) fail the
//! request as a whole.

use std::sync::Arc;

use actix_web::web;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::body::JsonBody;
use super::fields::{NonEmpty, NonEmptyVisitor, Object, Shape, Whole, present};
use super::peer::Peer;
use super::priority::{WithdrawOnDrop, caller_gone};
use super::record::{ChatMeta, record, record_all};
use super::{ApiError, AppState, Caller, tenant};
use crate::config::Config;
use crate::engine::{Origin, Outcome, Prompt};

/// Most prompts one `/api/v1/prompts` request may carry (seed 000).
pub const MAX_PROMPTS: usize = 1000;

/// The lane seed 000's endpoints use.
pub const PROMPTS_LANE: &str = "bulk";

/// Registers the routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/prompt").route(web::post().to(prompt)))
        .service(web::resource("/api/v1/prompts").route(web::post().to(prompts)));
}

/// One prompt's answer, as seed 000 shapes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromptReply {
    /// `"success"` or `"error"`.
    pub status: &'static str,
    /// The answer; empty on error.
    pub response: String,
    /// What went wrong; only on error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl From<Outcome> for PromptReply {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Ok(answer) => PromptReply { status: "success", response: answer.text, error: None },
            Err(error) => {
                PromptReply { status: "error", response: String::new(), error: Some(error.to_string()) }
            }
        }
    }
}

/// `/api/v1/prompts`'s reply: one entry per prompt, in order.
#[derive(Debug, Serialize)]
pub struct PromptsReply {
    /// The answers, same order and length as the prompts.
    pub responses: Vec<PromptReply>,
}

async fn prompt(
    state: web::Data<AppState>,
    caller: Caller,
    peer: Peer,
    body: JsonBody<Object<PromptBody>>,
) -> Result<web::Json<PromptReply>, ApiError> {
    let text = body.into_inner().0.prompt.0;
    let meta = ChatMeta::new(&caller, lane(&state.config));
    let request = json!({ "prompt": text });
    let prompt = Prompt::text(text);
    let admission =
        tenant::admit(&state.engine, meta.tenant.as_deref(), &meta.lane, std::slice::from_ref(&prompt))
            .await?;
    let origin = Origin::request(meta.owner.as_deref().unwrap_or(Origin::LOCAL), None);
    let mut pending = WithdrawOnDrop { engine: &state.engine, origin: Some(Arc::clone(&origin)) };
    let outcome = tokio::select! {
        outcome = state.engine.submit_one_from(&meta.lane, &origin, prompt) => outcome,
        () = peer.gone() => return Err(caller_gone()),
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => return Err(tenant::submit_refused(admission, error).await),
    };
    pending.origin = None;
    record(&state.store, meta.chat(request, &outcome));
    Ok(web::Json(outcome.into()))
}

async fn prompts(
    state: web::Data<AppState>,
    caller: Caller,
    peer: Peer,
    body: JsonBody<Object<PromptsBody>>,
) -> Result<web::Json<PromptsReply>, ApiError> {
    let prompts = body.into_inner().0.into_prompts();
    let meta = ChatMeta::new(&caller, lane(&state.config));
    let requests: Vec<Value> = prompts.iter().map(request_of).collect();
    let admission = tenant::admit(&state.engine, meta.tenant.as_deref(), &meta.lane, &prompts).await?;
    let origin = Origin::request(meta.owner.as_deref().unwrap_or(Origin::LOCAL), None);
    let mut pending = WithdrawOnDrop { engine: &state.engine, origin: Some(Arc::clone(&origin)) };
    let submission = match state.engine.submit_from(&meta.lane, &origin, prompts).await {
        Ok(submission) => submission,
        Err(error) => return Err(tenant::submit_refused(admission, error).await),
    };
    let _admission = admission;
    let outcomes = tokio::select! {
        outcomes = submission.collect() => outcomes,
        () = peer.gone() => return Err(caller_gone()),
    };
    pending.origin = None;
    let chats = requests.into_iter().zip(&outcomes).map(|(request, outcome)| meta.chat(request, outcome));
    record_all(&state.store, chats);
    Ok(web::Json(PromptsReply { responses: outcomes.into_iter().map(PromptReply::from).collect() }))
}

/// [`PROMPTS_LANE`] when configured, else the lowest-ranked lane.
fn lane(config: &Config) -> &str {
    if config.lanes.contains_key(PROMPTS_LANE) {
        return PROMPTS_LANE;
    }
    config.lanes.iter().min_by_key(|(_, lane)| lane.rank).map_or(PROMPTS_LANE, |(name, _)| name)
}

/// `/api/v1/prompt`'s body: `{"prompt": "…"}`, the text not blank.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptBody {
    /// The prompt text.
    pub prompt: NonEmpty,
}

impl Shape for PromptBody {
    const SHAPE: &'static str = "an object like {\"prompt\": \"…\"}";
}

/// `/api/v1/prompts`'s body: `{"prompts": ["…", {"prompt": "…", "temperature"?, "max_tokens"?},
/// …]}`, 1 to [`MAX_PROMPTS`] prompts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsBody {
    /// The prompts, in order.
    pub prompts: PromptList,
}

impl Shape for PromptsBody {
    const SHAPE: &'static str = "an object like {\"prompts\": [\"…\"]}";
}

impl PromptsBody {
    /// The prompts to submit, in order.
    pub fn into_prompts(self) -> Vec<Prompt> {
        self.prompts.0.into_iter().map(PromptItem::into_prompt).collect()
    }
}

/// 1 to [`MAX_PROMPTS`] prompts; refused at the first one past the limit.
#[derive(Debug)]
pub struct PromptList(pub Vec<PromptItem>);

impl<'de> Deserialize<'de> for PromptList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items;
        impl<'de> Visitor<'de> for Items {
            type Value = Vec<PromptItem>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "an array of 1 to {MAX_PROMPTS} prompts")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PROMPTS));
                while let Some(item) = seq.next_element()? {
                    if items.len() == MAX_PROMPTS {
                        return Err(de::Error::invalid_length(MAX_PROMPTS + 1, &self));
                    }
                    items.push(item);
                }
                if items.is_empty() {
                    return Err(de::Error::invalid_length(0, &self));
                }
                Ok(items)
            }
        }
        deserializer.deserialize_seq(Items).map(PromptList)
    }
}

/// One entry of `prompts`: its text, or an object with the text and the parameters it sets.
#[derive(Debug)]
pub enum PromptItem {
    /// `"…"`.
    Text(String),
    /// `{"prompt": "…", "temperature"?, "max_tokens"?}`.
    Object(PromptObject),
}

impl PromptItem {
    fn into_prompt(self) -> Prompt {
        match self {
            PromptItem::Text(text) => Prompt::text(text),
            PromptItem::Object(object) => {
                let mut prompt = Prompt::text(object.prompt.0);
                prompt.temperature = object.temperature.map(|t| t.0);
                prompt.max_tokens = object.max_tokens.map(|n| u32::try_from(n.0).unwrap_or(u32::MAX));
                prompt
            }
        }
    }
}

impl<'de> Deserialize<'de> for PromptItem {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Item;
        impl<'de> Visitor<'de> for Item {
            type Value = PromptItem;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a prompt: a non-empty string or an object like {\"prompt\": \"…\"}")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<PromptItem, E> {
                self.visit_string(text.to_string())
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<PromptItem, E> {
                NonEmptyVisitor.visit_string(text).map(PromptItem::Text)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PromptItem, A::Error> {
                PromptObject::deserialize(de::value::MapAccessDeserializer::new(map)).map(PromptItem::Object)
            }
        }
        deserializer.deserialize_any(Item)
    }
}

/// An entry of `prompts` given as an object.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptObject {
    /// The prompt text.
    pub prompt: NonEmpty,
    /// Sampling temperature, 0.0 to 2.0.
    #[serde(default, deserialize_with = "present")]
    pub temperature: Option<Temperature>,
    /// Reply budget, at least 1.
    #[serde(default, deserialize_with = "present")]
    pub max_tokens: Option<Whole<1, { u32::MAX as u64 }>>,
}

/// A sampling temperature from 0.0 to 2.0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Temperature(pub f32);

impl<'de> Deserialize<'de> for Temperature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Range;
        impl Visitor<'_> for Range {
            type Value = f32;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number from 0.0 to 2.0")
            }
            fn visit_f64<E: de::Error>(self, t: f64) -> Result<f32, E> {
                if (0.0..=2.0).contains(&t) {
                    Ok(t as f32)
                } else {
                    Err(E::invalid_value(Unexpected::Float(t), &self))
                }
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<f32, E> {
                if n <= 2 { Ok(n as f32) } else { Err(E::invalid_value(Unexpected::Unsigned(n), &self)) }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<f32, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(Unexpected::Signed(n), &self)),
                }
            }
        }
        deserializer.deserialize_f64(Range).map(Temperature)
    }
}

/// The chat record of a prompt: its text and the parameters it set.
fn request_of(prompt: &Prompt) -> Value {
    let mut request = json!({ "prompt": prompt.last_user_text() });
    if let Some(t) = prompt.temperature {
        request["temperature"] = json!(t);
    }
    if let Some(n) = prompt.max_tokens {
        request["max_tokens"] = json!(n);
    }
    request
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::request_json::{JsonError, parse};

    fn prompts(body: Value) -> Result<Vec<Prompt>, JsonError> {
        parse::<Object<PromptsBody>>(body.to_string().as_bytes()).map(|body| body.0.into_prompts())
    }

    fn param<T: fmt::Debug>(result: Result<T, JsonError>) -> Option<String> {
        match result {
            Err(error) => error.param,
            Ok(value) => panic!("expected a bad request, got {value:?}"),
        }
    }

    #[test]
    fn prompts_take_strings_and_objects_in_order() {
        let body = json!({"prompts": ["a", {"prompt": "b"}, "c"]});
        let texts =
            prompts(body).map(|p| p.iter().map(|p| p.last_user_text().to_string()).collect::<Vec<_>>());
        assert_eq!(texts.ok(), Some(vec!["a".into(), "b".into(), "c".into()]));
    }

    #[test]
    fn prompts_may_carry_temperature_and_max_tokens() {
        let body = json!({"prompts": [{"prompt": "b", "temperature": 0.0, "max_tokens": 16}, "c", {"prompt": "d", "temperature": 1}]});
        let prompts_ = prompts(body).expect("valid");
        assert_eq!((prompts_[0].temperature, prompts_[0].max_tokens), (Some(0.0), Some(16)));
        assert_eq!((prompts_[1].temperature, prompts_[1].max_tokens), (None, None));
        assert_eq!(prompts_[2].temperature, Some(1.0));
        for (item, expected) in [
            (json!({"prompt": "a", "temperature": 3}), "prompts[0].temperature"),
            (json!({"prompt": "a", "temperature": 2.5}), "prompts[0].temperature"),
            (json!({"prompt": "a", "temperature": -1}), "prompts[0].temperature"),
            (json!({"prompt": "a", "temperature": "hot"}), "prompts[0].temperature"),
            (json!({"prompt": "a", "temperature": null}), "prompts[0].temperature"),
            (json!({"prompt": "a", "max_tokens": 0}), "prompts[0].max_tokens"),
            (json!({"prompt": "a", "max_tokens": 1.5}), "prompts[0].max_tokens"),
            (json!({"prompt": "a", "max_tokens": 5_000_000_000_u64}), "prompts[0].max_tokens"),
            (json!({"temperature": 0.1}), "prompts[0].prompt"),
        ] {
            assert_eq!(param(prompts(json!({"prompts": [item]}))).as_deref(), Some(expected), "{item}");
        }
    }

    #[test]
    fn bad_prompts_name_the_offending_entry() {
        let cases = [
            (json!({"prompts": []}), Some("prompts")),
            (json!({"prompts": "x"}), Some("prompts")),
            (json!({"prompts": null}), Some("prompts")),
            (json!({}), Some("prompts")),
            (json!([]), None),
            (json!({"prompts": ["a", "b", "c", 4]}), Some("prompts[3]")),
            (json!({"prompts": ["a", " "]}), Some("prompts[1]")),
            (json!({"prompts": [null]}), Some("prompts[0]")),
            (json!({"prompts": [{"text": "a"}]}), Some("prompts[0].text")),
            (json!({"prompts": [{}]}), Some("prompts[0].prompt")),
            (json!({"prompts": [{"prompt": 1}]}), Some("prompts[0].prompt")),
            (json!({"prompts": [{"prompt": [1]}]}), Some("prompts[0].prompt")),
            (json!({"prompts": ["a"], "lane": "high"}), Some("lane")),
        ];
        for (body, expected) in cases {
            assert_eq!(param(prompts(body.clone())).as_deref(), expected, "{body}");
        }
        let many = prompts(json!({"prompts": vec!["p"; MAX_PROMPTS + 1]}));
        let error = many.expect_err("too many");
        assert_eq!(error.param.as_deref(), Some("prompts"));
        assert!(
            error.message.contains("invalid length 1001, expected an array of 1 to 1000 prompts"),
            "{}",
            error.message
        );
        assert!(prompts(json!({"prompts": vec!["p"; MAX_PROMPTS]})).is_ok());
    }

    #[test]
    fn a_single_prompt_must_be_a_non_empty_string() {
        let one =
            |body: Value| parse::<Object<PromptBody>>(body.to_string().as_bytes()).map(|b| b.0.prompt.0);
        assert_eq!(one(json!({"prompt": "hi"})).ok().as_deref(), Some("hi"));
        for body in
            [json!({}), json!({"prompt": ""}), json!({"prompt": 3}), json!({"prompt": "x", "lane": 1})]
        {
            let expected = if body.get("lane").is_some() { "lane" } else { "prompt" };
            assert_eq!(param(one(body.clone())).as_deref(), Some(expected), "{body}");
        }
        let error = one(json!("a secret prompt")).expect_err("not an object");
        assert_eq!(error.param, None);
        assert!(
            error.message.contains("expected an object like {\"prompt\": \"…\"}, got a string of 15 bytes"),
            "{}",
            error.message
        );
    }

    #[test]
    fn errors_never_show_the_prompt() {
        for body in [
            json!({"prompts": ["secret", {"prompt": "secret", "temperature": "secret"}]}),
            json!({"prompts": ["secret", {"prompt": "secret", "max_tokens": "secret"}]}),
            json!({"prompts": ["secret", {"prompt": "secret", "x": "secret"}]}),
            json!({"prompts": ["secret"], "x": "secret"}),
            json!(["secret"]),
        ] {
            let message = prompts(body.clone()).err().map(|e| e.message).unwrap_or_default();
            assert!(!message.is_empty() && !message.contains("secret"), "{body}: {message}");
        }
    }
}
