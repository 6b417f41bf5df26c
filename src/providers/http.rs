//! What the HTTP providers share: one pooled client per upstream, sending a call and reading its
//! reply in full, and turning transport failures and error statuses into [`ProviderError`]s.
//!
//! Classification lives here once so OpenAI and Gemini agree on what a 429, a 503, a refused
//! connection or a cut-off body means to the `LlmClient` actor deciding whether to retry.

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;

use super::{BuildError, ProviderError, RateHints, excerpt, headers};
use crate::config::UpstreamConfig;

/// Longest wait for a TCP (and TLS) connection, when the call timeout is longer: a host that has
/// not accepted in this long is down, and the caller should fall back rather than wait a minute.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an idle pooled connection is kept. Below the 5 s keep-alive of uvicorn (vLLM) and
/// llama.cpp's server, so we never reuse a connection the server is closing at that moment, which
/// would surface as a spurious dropped connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The `status` of a [`ProviderError::Rejected`] for a request refused before it was sent (a key
/// that is not a valid header value, a base URL that does not parse).
const NOT_SENT: u16 = 0;

/// Builds the one HTTP client an upstream's calls share, so connections are pooled and reused
/// across thousands of calls to the same host.
pub(crate) fn client(upstream: &UpstreamConfig) -> Result<reqwest::Client, BuildError> {
    let timeout = Duration::from_millis(upstream.timeout_ms);
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // Idle connections beyond the concurrency cap would never be used at once.
        .pool_max_idle_per_host(upstream.concurrency.ceiling())
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        // Following a redirect would turn the POST into a GET; a moved API is a config error.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| BuildError::Http { upstream: upstream.name.clone(), source })
}

/// `{base_url}/{path}` with exactly one slash between them.
pub(crate) fn join_url(base_url: &str, path: &str) -> String {
    format!("{}/{}", base_url.trim_end_matches('/'), path.trim_start_matches('/'))
}

/// An API key as a header value that is never printed in `Debug` output. A key that cannot be a
/// header value is kept as the error every call will return, since [`BuildError`] has no room for
/// it and the failure must name the cause without showing the key.
pub(crate) fn key_header(upstream: &str, value: String, prefix: &str) -> Result<HeaderValue, ProviderError> {
    match HeaderValue::from_str(&format!("{prefix}{}", value.trim())) {
        Ok(mut header) => {
            header.set_sensitive(true);
            Ok(header)
        }
        Err(_) => {
            tracing::warn!(
                upstream,
                "API key contains characters not allowed in an HTTP header; every call will be refused"
            );
            Err(ProviderError::Rejected {
                status: NOT_SENT,
                message: "the API key is not a valid HTTP header value; check its environment variable"
                    .into(),
            })
        }
    }
}

/// A reply with a 2xx status, read in full.
pub(crate) struct Success {
    /// The body bytes.
    pub body: bytes::Bytes,
    /// Rate-limit headers sent with it.
    pub hints: RateHints,
}

/// Sends `request` and reads the whole reply. Non-2xx statuses become errors; `body_retry_after`
/// reads a provider-specific retry delay from a 429's body when no header gave one.
pub(crate) async fn send(
    provider: &'static str,
    request: RequestBuilder,
    body_retry_after: fn(&[u8]) -> Option<Duration>,
) -> Result<Success, ProviderError> {
    let started = Instant::now();
    let result = exchange(request, body_retry_after).await;
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &result {
        Ok(success) => tracing::debug!(provider, elapsed_ms, bytes = success.body.len(), "upstream replied"),
        Err(error) => {
            tracing::debug!(provider, elapsed_ms, kind = error.kind(), %error, "upstream call failed")
        }
    }
    result
}

async fn exchange(
    request: RequestBuilder,
    body_retry_after: fn(&[u8]) -> Option<Duration>,
) -> Result<Success, ProviderError> {
    let response = request.send().await.map_err(|e| transport_error(&e))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| transport_error(&e))?;
    if status.is_success() {
        return Ok(Success { body, hints: headers::rate_hints(&headers) });
    }
    Err(status_error(status, &headers, &body, body_retry_after))
}

/// Classifies a non-2xx reply.
pub(crate) fn status_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    body_retry_after: fn(&[u8]) -> Option<Duration>,
) -> ProviderError {
    let code = status.as_u16();
    match code {
        429 => ProviderError::RateLimited {
            retry_after: headers::retry_after(headers, SystemTime::now()).or_else(|| body_retry_after(body)),
            hints: Box::new(headers::rate_hints(headers)),
        },
        503 => ProviderError::Overloaded { message: error_message(status, body) },
        500..=599 => ProviderError::Server { status: code, message: error_message(status, body) },
        300..=399 => {
            let location = headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or("elsewhere");
            ProviderError::Rejected {
                status: code,
                message: excerpt(&format!("redirected to {location}; point base_url at the final address")),
            }
        }
        // 4xx, and the odd 1xx or unknown code no API sends on purpose: retrying will not help.
        _ => ProviderError::Rejected { status: code, message: error_message(status, body) },
    }
}

/// The `{"error": {"message": …}}` both OpenAI and Gemini send, else the body itself, else the
/// status's reason phrase.
pub(crate) fn error_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        message: String,
    }
    if let Ok(envelope) = serde_json::from_slice::<Envelope>(body) {
        return excerpt(&envelope.error.message);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_string()
    } else {
        excerpt(text)
    }
}

/// Classifies a failure of the transport (no status, or a body cut short).
pub(crate) fn transport_error(error: &reqwest::Error) -> ProviderError {
    let message = excerpt(&describe(error));
    if error.is_builder() {
        ProviderError::Rejected {
            status: NOT_SENT,
            message: format!("could not build the request: {message}"),
        }
    } else if error.is_connect() {
        // Checked before timeouts: a connect timeout is both, and it means nothing was sent.
        ProviderError::Connect { message }
    } else if error.is_timeout() {
        ProviderError::Timeout
    } else {
        ProviderError::Dropped { message }
    }
}

/// The causes of a reqwest error, outermost first. reqwest's own text only names the URL; the
/// useful part ("Connection refused", "connection closed before message completed") is in the
/// sources.
fn describe(error: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() { error.to_string() } else { causes.join(": ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &[u8]) -> Option<Duration> {
        None
    }

    #[test]
    fn join_url_tolerates_trailing_slash() {
        assert_eq!(join_url("http://h/v1/", "chat/completions"), "http://h/v1/chat/completions");
        assert_eq!(join_url("http://h/v1", "/chat/completions"), "http://h/v1/chat/completions");
    }

    #[test]
    fn statuses_map_to_error_kinds() {
        let headers = HeaderMap::new();
        let kind = |code: u16| status_error(StatusCode::from_u16(code).unwrap(), &headers, b"", never).kind();
        assert_eq!(kind(429), "rate_limited");
        assert_eq!(kind(503), "overloaded");
        assert_eq!(kind(500), "server");
        assert_eq!(kind(502), "server");
        assert_eq!(kind(400), "rejected");
        assert_eq!(kind(404), "rejected");
        assert_eq!(kind(301), "rejected");
    }

    #[test]
    fn error_message_prefers_the_json_message() {
        let body = br#"{"error": {"message": "model not found", "type": "invalid_request_error"}}"#;
        assert_eq!(error_message(StatusCode::NOT_FOUND, body), "model not found");
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b"  upstream down "), "upstream down");
        assert_eq!(error_message(StatusCode::BAD_GATEWAY, b""), "Bad Gateway");
    }

    #[test]
    fn a_bad_key_is_refused_without_showing_it() {
        let error = key_header("u", "sk-secret\nvalue".into(), "Bearer ").unwrap_err();
        assert!(!error.to_string().contains("sk-secret"));
        let header = key_header("u", " sk-ok \n".into(), "Bearer ").unwrap();
        assert_eq!(header, "Bearer sk-ok");
        assert!(header.is_sensitive());
    }
}
