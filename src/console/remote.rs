//! Attaching to a `ferry serve` daemon: its event stream (`GET /api/v1/events`, server-sent
//! events) feeds the dashboard and its config endpoints carry the controls, with the same API key
//! any client would use.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::engine::{MetricsEvent, Snapshot};

use super::command::Call;
use super::error::ConsoleError;
use super::source::Update;
use super::state::Link;
use super::view::ConfigView;

/// Wait before reconnecting a dropped stream.
const RECONNECT: Duration = Duration::from_secs(1);
/// Longest the event stream may stay silent (three keep-alives) before reconnecting.
const SILENCE: Duration = Duration::from_secs(45);

/// A daemon's HTTP API.
#[derive(Clone)]
pub struct RemoteClient {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl RemoteClient {
    /// A client for the daemon at `base` (`http://HOST:PORT`).
    pub fn new(base: &str, key: Option<String>) -> Result<Self, ConsoleError> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ConsoleError::BadUrl(base));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|source| ConsoleError::Http { url: base.clone(), source })?;
        Ok(RemoteClient { base, key, http })
    }

    /// The daemon's address.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> (String, reqwest::RequestBuilder) {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        (url, request)
    }

    async fn send(&self, url: String, request: reqwest::RequestBuilder) -> Result<Value, ConsoleError> {
        let failed = |source| ConsoleError::Http { url: url.clone(), source };
        let response = request.send().await.map_err(failed)?;
        let status = response.status();
        let body: Value = response.json().await.map_err(failed)?;
        if !status.is_success() {
            let message = body["error"]["message"].as_str().unwrap_or("(no message)").to_string();
            return Err(ConsoleError::Remote { url, status: status.as_u16(), message });
        }
        Ok(body)
    }

    /// `GET /api/v1/config`.
    pub async fn config(&self) -> Result<ConfigView, ConsoleError> {
        let (url, request) = self.request(reqwest::Method::GET, "/api/v1/config");
        let body = self.send(url.clone(), request.timeout(Duration::from_secs(10))).await?;
        serde_json::from_value(body).map_err(|e| ConsoleError::Remote {
            url,
            status: 200,
            message: e.to_string(),
        })
    }

    /// Makes a control call; returns the configuration after it.
    pub async fn run(&self, call: Call) -> Result<ConfigView, ConsoleError> {
        let (path, body) = match call {
            Call::BatchSize(size) => ("/api/v1/config/batch-size".to_string(), json!({ "size": size })),
            Call::BatchDelay(ms) => ("/api/v1/config/batch-delay".to_string(), json!({ "delay_ms": ms })),
            Call::Lane(lane, patch) => {
                let mut body = serde_json::Map::new();
                if let Some(w) = patch.window_ms {
                    body.insert("window_ms".into(), w.into());
                }
                if let Some(m) = patch.max_batch {
                    body.insert("max_batch".into(), m.into());
                }
                if let Some(d) = patch.delay_ms {
                    body.insert("delay_ms".into(), d.into());
                }
                (format!("/api/v1/config/lanes/{lane}"), Value::Object(body))
            }
            Call::Pause => ("/api/v1/config/pause".to_string(), json!({})),
            Call::Resume => ("/api/v1/config/resume".to_string(), json!({})),
            Call::Burst(_) => return self.config().await,
        };
        let (url, request) = self.request(reqwest::Method::POST, &path);
        self.send(url, request.json(&body).timeout(Duration::from_secs(10))).await?;
        self.config().await
    }

    /// `POST /api/v1/prompts` with `n` demo prompts (the bulk lane); waits for the answers.
    pub async fn burst(&self, n: usize) -> Result<String, ConsoleError> {
        let prompts: Vec<String> = (0..n).map(|i| format!("demo prompt {i}")).collect();
        let (url, request) = self.request(reqwest::Method::POST, "/api/v1/prompts");
        let body = self.send(url, request.json(&json!({ "prompts": prompts }))).await?;
        let answers = body["responses"].as_array().map_or(&[][..], Vec::as_slice);
        let ok = answers.iter().filter(|r| r["status"] == "success").count();
        Ok(format!("burst of {n}: {ok} answered, {} failed", answers.len() - ok))
    }

    /// Follows the event stream into `tx`, reconnecting after a drop, until `tx` closes.
    pub async fn follow(self, tx: mpsc::Sender<Update>) {
        loop {
            let why = match self.stream_once(&tx).await {
                Ok(()) => "the stream ended".to_string(),
                Err(error) => error.to_string(),
            };
            if tx.is_closed() || tx.send(Update::Link(Link::Down(why))).await.is_err() {
                return;
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    async fn stream_once(&self, tx: &mpsc::Sender<Update>) -> Result<(), ConsoleError> {
        let (url, request) = self.request(reqwest::Method::GET, "/api/v1/events");
        let failed = |source| ConsoleError::Http { url: url.clone(), source };
        let response = request.header("accept", "text/event-stream").send().await.map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let message = response.text().await.unwrap_or_default();
            return Err(ConsoleError::Remote { url, status: status.as_u16(), message });
        }
        if tx.send(Update::Link(Link::Up)).await.is_err() {
            return Ok(());
        }
        // The event stream and the config endpoint are admin-only (they show every key's work):
        // an inference key is refused above with 403, which the console shows.
        if let Ok(config) = self.config().await
            && tx.send(Update::Config(config)).await.is_err()
        {
            return Ok(());
        }
        let mut body = response.bytes_stream();
        let mut messages = Messages::default();
        // The daemon sends a keep-alive every 15 s: three missed means it is gone or hung.
        while let Some(chunk) = tokio::time::timeout(SILENCE, body.next()).await.map_err(|_| {
            ConsoleError::Remote { url: url.clone(), status: 0, message: "no data for 45 s".into() }
        })? {
            messages.push(&chunk.map_err(failed)?);
            while let Some(message) = messages.next() {
                let message = message.map_err(|length| ConsoleError::Remote {
                    url: url.clone(),
                    status: 0,
                    message: format!("an event of over {length} bytes without an end; not ferry's stream?"),
                })?;
                if let Some(update) = parse_message(&message)
                    && tx.send(update).await.is_err()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The event stream's bytes cut into complete messages. Bytes wait here until their message
/// ends, so a character split between two chunks arrives whole; a message that grows past
/// [`MAX_MESSAGE`] without ending is refused (the stream is then dropped and reconnected).
#[derive(Debug, Default)]
struct Messages {
    bytes: Vec<u8>,
    /// Where the first message not yet taken starts.
    start: usize,
    /// How much of it was searched for its end already.
    searched: usize,
}

/// Longest message accepted (a snapshot is a few kilobytes).
const MAX_MESSAGE: usize = 4 << 20;

impl Messages {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.drain(..self.start);
        self.start = 0;
        self.bytes.extend_from_slice(chunk);
    }

    /// The next complete message, if there is one; its length so far if it is too long.
    fn next(&mut self) -> Option<Result<String, usize>> {
        let rest = &self.bytes[self.start..];
        // Messages end with a blank line: `\n\n`, or `\r\n\r\n`. A search goes on where the
        // last one stopped (less an end's length, which may have been cut in two).
        let from = self.searched.saturating_sub(3);
        let lf = rest[from..].windows(2).position(|w| w == b"\n\n").map(|at| (from + at, 2));
        let crlf = rest[from..].windows(4).position(|w| w == b"\r\n\r\n").map(|at| (from + at, 4));
        match lf.into_iter().chain(crlf).min() {
            Some((end, separator)) => {
                let message = String::from_utf8_lossy(&rest[..end]).into_owned();
                self.start += end + separator;
                self.searched = 0;
                Some(Ok(message))
            }
            None => {
                self.searched = rest.len();
                (rest.len() > MAX_MESSAGE).then_some(Err(rest.len()))
            }
        }
    }
}

/// One server-sent message as an update: `event: snapshot` carries a [`Snapshot`], plain
/// messages a [`MetricsEvent`]; comments (keep-alives) and unknown events give none.
pub fn parse_message(message: &str) -> Option<Update> {
    let mut kind = "message";
    let mut data = String::new();
    for line in message.lines() {
        if let Some(value) = line.strip_prefix("event:") {
            kind = value.trim();
        } else if let Some(value) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        }
    }
    match kind {
        "snapshot" => serde_json::from_str::<Snapshot>(&data).ok().map(Update::Snapshot),
        "message" if !data.is_empty() => match serde_json::from_str::<MetricsEvent>(&data) {
            Ok(event) => Some(Update::Metrics(event)),
            Err(error) => {
                tracing::warn!(event = "console_bad_message", error = %error);
                None
            }
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(messages: &mut Messages) -> Vec<String> {
        std::iter::from_fn(|| messages.next())
            .map(|m| m.unwrap_or_else(|n| panic!("too long: {n}")))
            .collect()
    }

    #[test]
    fn messages_are_cut_at_blank_lines_whatever_the_chunks() {
        let mut messages = Messages::default();
        messages.push(b"data: {\"a\":1}\n\ndata: {\"b\"");
        assert_eq!(all(&mut messages), ["data: {\"a\":1}"]);
        messages.push(b":2}\n\n: keep-alive\r\n\r\n");
        assert_eq!(all(&mut messages), ["data: {\"b\":2}", ": keep-alive"]);
        assert!(messages.next().is_none());
    }

    #[test]
    fn an_end_cut_between_chunks_is_found() {
        let mut messages = Messages::default();
        messages.push(b"data: 1\r\n\r");
        assert!(messages.next().is_none());
        messages.push(b"\ndata: 2\n");
        assert_eq!(all(&mut messages), ["data: 1"]);
        messages.push(b"\n");
        assert_eq!(all(&mut messages), ["data: 2"]);
    }

    #[test]
    fn a_character_split_between_chunks_arrives_whole() {
        let text = "data: {\"last_error\":\"délai dépassé\"}\n\n".as_bytes();
        let split = text.iter().position(|&b| b >= 0x80).map_or(0, |at| at + 1);
        let mut messages = Messages::default();
        messages.push(&text[..split]);
        assert!(messages.next().is_none());
        messages.push(&text[split..]);
        assert_eq!(all(&mut messages), ["data: {\"last_error\":\"délai dépassé\"}"]);
    }

    #[test]
    fn a_message_that_never_ends_is_refused() {
        let mut messages = Messages::default();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..4 {
            messages.push(&chunk);
            assert!(messages.next().is_none());
        }
        messages.push(b"x");
        assert_eq!(messages.next(), Some(Err(MAX_MESSAGE + 1)));
    }
}
