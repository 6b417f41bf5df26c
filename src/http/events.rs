//! `GET /api/v1/events`: the MetricsHub's messages as server-sent events, for a remote console
//! (`ferry console --connect`). The first message is `event: snapshot` with what the hub knows
//! (the `GET /api/v1/stats` source); every later one is a plain `data:` line holding one metrics
//! message as JSON. A subscriber too slow to keep up gets `event: lagged` and a fresh snapshot.
//! A comment line every [`KEEP_ALIVE`] keeps proxies from closing an idle stream.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use bytes::Bytes;
use futures_util::stream;
use serde::Serialize;
use tokio::sync::broadcast;

use super::{ApiError, AppState, Caller};
use crate::engine::{Engine, MetricsEvent};

/// Period of the keep-alive comment.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/v1/events").route(web::get().to(events)));
}

async fn events(state: web::Data<AppState>, _: Caller) -> Result<HttpResponse, ApiError> {
    let engine = state.engine.clone();
    let receiver = engine.subscribe();
    let first = message(Some("snapshot"), &engine.snapshot().await?);
    let stream = stream::unfold(Stream { engine, receiver, first: Some(first) }, next);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(stream))
}

struct Stream {
    engine: Engine,
    receiver: broadcast::Receiver<MetricsEvent>,
    first: Option<Bytes>,
}

async fn next(mut s: Stream) -> Option<(Result<Bytes, actix_web::Error>, Stream)> {
    if let Some(first) = s.first.take() {
        return Some((Ok(first), s));
    }
    let bytes = tokio::select! {
        received = s.receiver.recv() => match received {
            Ok(event) => message(None, &event),
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                let snapshot = s.engine.snapshot().await.ok()?;
                let mut bytes = message(Some("lagged"), &serde_json::json!({ "skipped": skipped })).to_vec();
                bytes.extend_from_slice(&message(Some("snapshot"), &snapshot));
                Bytes::from(bytes)
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        },
        () = tokio::time::sleep(KEEP_ALIVE) => Bytes::from_static(b": keep-alive\n\n"),
    };
    Some((Ok(bytes), s))
}

/// One server-sent message: an optional `event:` line and one `data:` line of JSON.
fn message<T: Serialize>(kind: Option<&str>, data: &T) -> Bytes {
    // Serializing these types cannot fail: no maps with non-string keys, no custom errors.
    let json = serde_json::to_string(data).unwrap_or_else(|_| "null".into());
    let text = match kind {
        Some(kind) => format!("event: {kind}\ndata: {json}\n\n"),
        None => format!("data: {json}\n\n"),
    };
    Bytes::from(text)
}
