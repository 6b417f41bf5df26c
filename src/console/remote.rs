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
        // The config endpoint is admin-only: with an inference key the console watches, and
        // changes are refused by the daemon when tried.
        if let Ok(config) = self.config().await
            && tx.send(Update::Config(config)).await.is_err()
        {
            return Ok(());
        }
        let mut body = response.bytes_stream();
        let mut pending = String::new();
        // The daemon sends a keep-alive every 15 s: three missed means it is gone or hung.
        while let Some(chunk) = tokio::time::timeout(SILENCE, body.next()).await.map_err(|_| {
            ConsoleError::Remote { url: url.clone(), status: 0, message: "no data for 45 s".into() }
        })? {
            let chunk = chunk.map_err(failed)?;
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some((message, rest)) = split_message(&pending) {
                if let Some(update) = parse_message(&message)
                    && tx.send(update).await.is_err()
                {
                    return Ok(());
                }
                pending = rest;
            }
        }
        Ok(())
    }
}

/// The first complete server-sent message of `pending` and what follows it.
fn split_message(pending: &str) -> Option<(String, String)> {
    let normalised;
    let text = if pending.contains('\r') {
        normalised = pending.replace("\r\n", "\n");
        normalised.as_str()
    } else {
        pending
    };
    let end = text.find("\n\n")?;
    Some((text[..end].to_string(), text[end + 2..].to_string()))
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
