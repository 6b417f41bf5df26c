//! `GET /v1/chat` (seed 002): the stored request/response pairs, newest first.
//!
//! Reply `{"chats": [{id, timestamp, batch_id, lane, priority, username, request_id, request,
//! response, ok, tokens_used, latency_ms}], "count"}`. Query: `username` filters, `limit`
//! (1..=1000, default 50) caps, `before=<id>` pages (pass the last `id` of the previous page).
//! A caller only ever sees chats its own key made; with keys off (loopback only) every chat.

use actix_web::web;
use serde::{Deserialize, Serialize};

use super::record::store_unavailable;
use super::{ApiError, AppState, Caller};
use crate::store::{ChatId, ChatQuery, ChatRecord};

/// Chats per page when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 50;
/// Most chats one page may hold.
pub const MAX_LIMIT: usize = 1000;

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/v1/chat").route(web::get().to(list)));
}

/// The query string, as text so each bad value is reported against its own name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatParams {
    /// Only chats with this username.
    pub username: Option<String>,
    /// At most this many chats.
    pub limit: Option<String>,
    /// Only chats older than this id.
    pub before: Option<String>,
}

/// The reply body.
#[derive(Debug, Serialize)]
pub struct ChatList {
    /// The chats, newest first.
    pub chats: Vec<ChatRecord>,
    /// How many `chats` holds.
    pub count: usize,
}

async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    params: web::Query<ChatParams>,
) -> Result<web::Json<ChatList>, ApiError> {
    let query = chat_query(&caller, params.into_inner())?;
    let chats = state.store.chats(query).await.map_err(store_unavailable("list_chats"))?;
    Ok(web::Json(ChatList { count: chats.len(), chats }))
}

/// The store query for `caller`'s request: always limited to the caller's own chats.
pub fn chat_query(caller: &Caller, params: ChatParams) -> Result<ChatQuery, ApiError> {
    let username = match params.username {
        Some(name) if name.trim().is_empty() => {
            return Err(ApiError::bad("username", "username must not be empty when given"));
        }
        other => other,
    };
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "limit",
                    format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT} (got a value of {} bytes)",
                        text.len()
                    ),
                ));
            }
        },
    };
    let before = match params.before.as_deref() {
        None => None,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(id) if id >= 1 => Some(ChatId(id)),
            _ => {
                return Err(ApiError::bad(
                    "before",
                    format!(
                        "before must be a chat id, a whole number of at least 1 (got a value of {} bytes)",
                        text.len()
                    ),
                ));
            }
        },
    };
    Ok(ChatQuery { owner: caller.key_id.clone(), username, limit, before })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(result: Result<ChatQuery, ApiError>) -> Option<String> {
        match result {
            Err(ApiError::BadRequest { param, .. }) => param,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    fn params(limit: Option<&str>, before: Option<&str>) -> ChatParams {
        ChatParams { username: None, limit: limit.map(Into::into), before: before.map(Into::into) }
    }

    #[test]
    fn the_owner_is_always_the_callers_key() -> Result<(), ApiError> {
        let caller = Caller { key_id: Some("abc".into()), admin: true, tenant: None };
        let query = chat_query(&caller, ChatParams::default())?;
        assert_eq!((query.owner.as_deref(), query.limit, query.before), (Some("abc"), DEFAULT_LIMIT, None));
        let open =
            chat_query(&Caller { key_id: None, admin: true, tenant: None }, params(Some("7"), Some("12")))?;
        assert_eq!((open.owner, open.limit, open.before), (None, 7, Some(ChatId(12))));
        Ok(())
    }

    #[test]
    fn bad_paging_names_the_parameter() {
        let caller = Caller { key_id: None, admin: true, tenant: None };
        for limit in ["0", "1001", "abc", "-1", "2.5"] {
            assert_eq!(param(chat_query(&caller, params(Some(limit), None))).as_deref(), Some("limit"));
        }
        for before in ["0", "x", "-3"] {
            assert_eq!(param(chat_query(&caller, params(None, Some(before)))).as_deref(), Some("before"));
        }
        let blank = ChatParams { username: Some(" ".into()), ..ChatParams::default() };
        assert_eq!(param(chat_query(&caller, blank)).as_deref(), Some("username"));
    }
}
