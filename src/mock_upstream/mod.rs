//! `ferry mock-upstream`: the simulated upstream served over HTTP, for integration tests and
//! benchmarks over a real socket.
//!
//! It speaks OpenAI chat completions (`POST /v1/chat/completions`, `GET /v1/models`) and Gemini
//! (`POST /v1beta/models/{model}:generateContent`), answers with the same
//! [`answer`](crate::providers::mock::answer) as the in-process mock, and injects faults at
//! configured rates from a seeded draw. It enforces its own `--rpm` limit over a sliding 60 s
//! window and counts what reached it (`GET /stats`), so a test can check that ferry kept to a
//! limit rather than trusting ferry's own account.
//!
//! What each fault looks like on the wire:
//! - rate limit: 429 with `Retry-After` (whole seconds, rounded up) and `retry-after-ms` on the
//!   OpenAI route; on the Gemini route a `RetryInfo` `retryDelay` in the body, as Google sends it.
//! - error: 500; overload: 503; both with an error JSON body.
//! - malformed: 200 with a `application/json` body that is not JSON.
//! - drop: the connection is closed before any byte of the reply (the reply body is a stream that
//!   fails before its first chunk, and actix-web closes the connection with the status line still
//!   unsent). The client sees "connection closed before message completed": sent, no status. The
//!   server logs this at error level ("Response payload stream error"); that line is expected.
//! - timeout: the reply is held for an hour, so the client's own timeout fires.
//! - misalign and wrong answers (combined calls only): 200 with an object of answers whose ids
//!   are shuffled, dropped, duplicated or renamed, or whose answers sit under the next id.
//! - capacity: `--capacity N` serves N calls at once at the base latency; the rest wait in turn,
//!   and with `--queue-limit M` a call that would be the M+1th waiting gets a 503 at once.
//! - garble (combined calls only): 200 with a well-formed body whose text is prose or a bare
//!   array of answers without ids, so ferry must fall back to sending the items one by one.
//!
//! Latency (`--latency-ms` plus jitter) is applied before every reply except 429s, which real
//! limiters send at once.

mod args;
mod book;
mod gemini;
mod openai;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Server, ServerHandle, ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{self, Next};
use actix_web::{App, HttpResponse, HttpServer, web};
pub use args::MockUpstreamArgs;
use book::{Book, RpmState};
pub use book::{MockStats, Outcomes};
use tokio::sync::Semaphore;

use crate::core::combine;
use crate::providers::CallRequest;
use crate::providers::mock::{self, Draws, Fault, FaultRates, SpoilRates, Spoiled};

/// How long a `--timeout-rate` call is held: longer than any sane client timeout.
const HANG: Duration = Duration::from_secs(3600);

/// Largest request body accepted; combined calls carry whole batches.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Idle keep-alive: long, so benchmark clients keep their pooled connections.
const KEEP_ALIVE: Duration = Duration::from_secs(75);

/// Serves the mock upstream until SIGINT/SIGTERM. Run it inside an actix System
/// (`actix_rt::System::new().block_on(serve(args))` or `#[actix_web::main]`).
pub async fn serve(args: MockUpstreamArgs) -> io::Result<()> {
    let (server, addr, _) = build(&args, true)?;
    tracing::info!(event = "mock_upstream_started", %addr, workers = args.workers, "mock upstream on http://{addr}/v1");
    server.await
}

/// Binds and starts the mock upstream in the background of the current actix System (for tests:
/// call it inside `#[actix_rt::test]`), returning at once with its address.
pub fn start(args: MockUpstreamArgs) -> io::Result<MockUpstreamHandle> {
    let (server, addr, upstream) = build(&args, false)?;
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(error) = server.await {
            tracing::warn!(event = "mock_upstream_failed", %error, "mock upstream stopped with an error");
        }
    });
    Ok(MockUpstreamHandle { addr, handle, upstream })
}

/// A running mock upstream started by [`start`].
pub struct MockUpstreamHandle {
    addr: SocketAddr,
    handle: ServerHandle,
    upstream: web::Data<Upstream>,
}

impl MockUpstreamHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI base URL, `http://{addr}/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The Gemini base URL, `http://{addr}/v1beta`.
    pub fn gemini_base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// What the upstream has seen so far (the same as `GET /stats`).
    pub fn stats(&self) -> MockStats {
        self.upstream.book().stats()
    }

    /// The last calls received (at most [`RECENT_CALLS`]), oldest first, as the mock parsed
    /// them: for tests that check what reached the upstream.
    pub fn recent_calls(&self) -> Vec<CallRequest> {
        self.upstream.recent.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// Stops the server without waiting for held (`--timeout-rate`) calls.
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Validates `args`, binds, and builds the server (not yet running).
fn build(args: &MockUpstreamArgs, signals: bool) -> io::Result<(Server, SocketAddr, web::Data<Upstream>)> {
    let rates = args.fault_rates();
    let total = rates.server
        + rates.rate_limited
        + rates.overloaded
        + rates.malformed
        + rates.dropped
        + rates.timeout;
    if total > 1.0 + f64::EPSILON {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the fault rates add up to {total}; together they must be at most 1.0"),
        ));
    }
    let upstream = web::Data::new(Upstream::new(args));
    let data = upstream.clone();
    let mut server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .wrap(middleware::from_fn(require_key))
            .configure(routes)
    })
    .workers(usize::try_from(args.workers).unwrap_or(1))
    .keep_alive(KEEP_ALIVE)
    .backlog(4096)
    // Held calls would otherwise keep a stopping server alive for the default 30 s.
    .shutdown_timeout(1)
    .bind(args.bind)?;
    if !signals {
        server = server.disable_signals();
    }
    let addr = server.addrs().first().copied().ok_or_else(|| io::Error::other("bound no address"))?;
    Ok((server.run(), addr, upstream))
}

fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/v1/chat/completions", web::post().to(openai::chat_completions))
        .route("/v1/models", web::get().to(openai::models))
        .route("/v1beta/models/{call}", web::post().to(gemini::generate_content))
        .route("/health", web::get().to(health))
        .route("/stats", web::get().to(stats))
        .default_service(web::to(not_found));
}

/// With `--api-key`, refuses model calls that do not carry it (as a real provider would).
async fn require_key(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let wanted = request.app_data::<web::Data<Upstream>>().and_then(|u| u.args.api_key.clone());
    let open_path = matches!(request.path(), "/health" | "/stats");
    if let (Some(wanted), false) = (wanted, open_path) {
        let headers = request.headers();
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let goog = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
        if bearer.or(goog) != Some(wanted.as_str()) {
            let refusal = openai::error_response(StatusCode::UNAUTHORIZED, "invalid or missing API key");
            return Ok(request.into_response(refusal).map_into_right_body());
        }
    }
    next.call(request).await.map(ServiceResponse::map_into_left_body)
}

async fn health() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn stats(upstream: web::Data<Upstream>) -> HttpResponse {
    HttpResponse::Ok().json(upstream.book().stats())
}

async fn not_found() -> HttpResponse {
    openai::error_response(StatusCode::NOT_FOUND, "no such route on the mock upstream")
}

/// How the mock answers one call, decided before any waiting.
enum Verdict {
    /// Over `--rpm`: a 429 at once.
    RpmLimited(Duration),
    /// An injected fault, after `delay` (except a 429, which is sent at once).
    Fault(Fault, Duration),
    /// A normal answer after `delay`; `bits` is the draw that decides `--garble-rate`.
    Answer(Duration, u64),
}

/// The two APIs' ways of writing answers and errors.
trait Dialect {
    /// The 2xx body for `reply` to `request`; `serial` makes ids unique.
    fn answer(&self, request: &CallRequest, reply: &crate::providers::CallReply, serial: u64)
    -> HttpResponse;
    /// An error reply with `status`.
    fn error(&self, status: StatusCode, message: &str) -> HttpResponse;
    /// A 429 asking the caller to wait `retry_after`.
    fn rate_limited(&self, retry_after: Duration, message: &str) -> HttpResponse;
}

/// The state shared by every worker.
struct Upstream {
    args: MockUpstreamArgs,
    faults: FaultRates,
    spoils: SpoilRates,
    draws: Draws,
    book: Mutex<Book>,
    recent: Mutex<std::collections::VecDeque<CallRequest>>,
    started: Instant,
    /// With `--capacity`: the slots a call holds for its latency; calls beyond wait in turn.
    slots: Option<Arc<Semaphore>>,
}

/// Calls the in-process handle keeps for [`MockUpstreamHandle::recent_calls`].
pub const RECENT_CALLS: usize = 1_000;

impl Upstream {
    fn new(args: &MockUpstreamArgs) -> Self {
        Self {
            args: args.clone(),
            faults: args.fault_rates(),
            spoils: args.spoil_rates(),
            slots: (args.capacity > 0).then(|| Arc::new(Semaphore::new(args.capacity as usize))),
            draws: Draws::new(args.seed),
            book: Mutex::new(Book::new(args.rpm)),
            recent: Mutex::new(std::collections::VecDeque::new()),
            started: Instant::now(),
        }
    }

    /// The book, even if a handler panicked while holding it: counters stay usable.
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a call whose body was not understood.
    fn refuse(&self) {
        let mut book = self.book();
        book.arrive(self.started.elapsed());
        book.outcomes().bad_request += 1;
    }

    /// Counts a call and decides its fate; also returns the `--rpm` headers to send.
    fn decide(&self) -> (Verdict, Option<RpmState>, u64) {
        let (draw, bits) = self.draws.next();
        let delay = mock::latency(self.args.latency_ms, self.args.latency_jitter_ms, bits);
        let now = self.started.elapsed();
        let mut book = self.book();
        book.arrive(now);
        let serial = book.requests();
        let rpm = match book.admit(now) {
            Ok(rpm) => rpm,
            Err(wait) => {
                book.outcomes().rpm_limited += 1;
                let limit = self.args.rpm.unwrap_or(0);
                return (
                    Verdict::RpmLimited(wait),
                    Some(RpmState { limit, remaining: 0, reset: wait }),
                    serial,
                );
            }
        };
        let Some(fault) = self.faults.pick(draw) else { return (Verdict::Answer(delay, bits), rpm, serial) };
        let outcomes = book.outcomes();
        match fault {
            Fault::Server => outcomes.server_error += 1,
            Fault::RateLimited => outcomes.rate_limited += 1,
            Fault::Overloaded => outcomes.overloaded += 1,
            Fault::Malformed => outcomes.malformed += 1,
            Fault::Dropped => outcomes.dropped += 1,
            Fault::Timeout => outcomes.timeout += 1,
        }
        (Verdict::Fault(fault, delay), rpm, serial)
    }
}

/// Answers one parsed call the way `dialect` writes it.
async fn respond(upstream: &Upstream, dialect: &impl Dialect, request: CallRequest) -> HttpResponse {
    {
        let mut recent = upstream.recent.lock().unwrap_or_else(PoisonError::into_inner);
        if recent.len() == RECENT_CALLS {
            recent.pop_front();
        }
        recent.push_back(request.clone());
    }
    let (verdict, rpm, serial) = upstream.decide();
    if combine::parse_request(&request.messages).is_some() && carries_schema(request.response_format.as_ref())
    {
        upstream.book().combined_with_schema();
    }
    tracing::debug!(event = "mock_call", serial, "mock upstream call");
    // A server with `--capacity` slots: a call that does work waits for one, in turn, and holds
    // it for its latency (429s are answered at once, a held call takes no slot). The semaphore
    // is never closed, so acquiring cannot fail.
    let works = matches!(
        verdict,
        Verdict::Answer(..)
            | Verdict::Fault(Fault::Server | Fault::Overloaded | Fault::Malformed | Fault::Dropped, _)
    );
    let _slot = match (&upstream.slots, works) {
        (Some(slots), true) => {
            let limit = u64::from(upstream.args.queue_limit);
            if slots.available_permits() == 0 && limit > 0 && upstream.book().waiting() >= limit {
                upstream.book().outcomes().overloaded += 1;
                return dialect.error(StatusCode::SERVICE_UNAVAILABLE, "queue full (--queue-limit)");
            }
            Some(Slot::take(upstream, slots).await)
        }
        _ => None,
    };
    let mut response = match verdict {
        Verdict::RpmLimited(wait) => {
            dialect.rate_limited(wait, "rate limit reached: --rpm requests per minute")
        }
        Verdict::Fault(Fault::RateLimited, _) => dialect.rate_limited(
            Duration::from_millis(upstream.args.retry_after_ms),
            "rate limit reached (injected by the mock upstream)",
        ),
        Verdict::Fault(Fault::Timeout, _) => {
            tokio::time::sleep(HANG).await;
            dialect.error(StatusCode::GATEWAY_TIMEOUT, "held past any timeout (injected)")
        }
        Verdict::Fault(Fault::Server, delay) => {
            pause(delay).await;
            dialect.error(StatusCode::INTERNAL_SERVER_ERROR, "internal error (injected)")
        }
        Verdict::Fault(Fault::Overloaded, delay) => {
            pause(delay).await;
            dialect.error(StatusCode::SERVICE_UNAVAILABLE, "overloaded (injected)")
        }
        Verdict::Fault(Fault::Malformed, delay) => {
            pause(delay).await;
            malformed()
        }
        Verdict::Fault(Fault::Dropped, delay) => {
            pause(delay).await;
            dropped()
        }
        Verdict::Answer(delay, bits) => {
            pause(delay).await;
            let mut reply = mock::answer(&request, upstream.args.output_tokens);
            if let Some((spoiled, text)) = mock::spoil(&request, &upstream.spoils, bits) {
                reply.text = text;
                let mut book = upstream.book();
                let outcomes = book.outcomes();
                match spoiled {
                    Spoiled::Garbled => outcomes.garbled += 1,
                    Spoiled::Misaligned(_) => outcomes.misaligned += 1,
                    Spoiled::Wrong => outcomes.wrong += 1,
                }
            } else {
                let prompts = combine::parse_request(&request.messages).map_or(1, |p| p.len() as u64);
                upstream.book().answered(prompts);
            }
            dialect.answer(&request, &reply, serial)
        }
    };
    if let Some(rpm) = rpm {
        add_rpm_headers(&mut response, rpm);
    }
    response
}

/// A `--capacity` slot held by a call, counted in the book while waited for and held.
struct Slot<'a> {
    upstream: &'a Upstream,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl<'a> Slot<'a> {
    async fn take(upstream: &'a Upstream, slots: &Arc<Semaphore>) -> Slot<'a> {
        upstream.book().wait_for_slot();
        // Counted as no longer waiting even if the caller goes away mid-wait.
        struct Waiting<'b>(&'b Upstream, bool);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.book().stop_waiting(self.1);
            }
        }
        let mut waiting = Waiting(upstream, false);
        // The semaphore is never closed, so acquiring cannot fail.
        let permit = Arc::clone(slots).acquire_owned().await.ok();
        waiting.1 = permit.is_some();
        drop(waiting);
        Slot { upstream, _permit: permit }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self._permit.is_some() {
            self.upstream.book().release_slot();
        }
    }
}

/// Whether a `response_format` carries a JSON schema, as `json_schema` or llama-cpp-python's
/// `json_object` with `schema`.
fn carries_schema(format: Option<&serde_json::Value>) -> bool {
    format.is_some_and(|f| {
        f.pointer("/json_schema/schema").or_else(|| f.get("schema")).is_some_and(|s| s.is_object())
    })
}

async fn pause(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

/// A 200 whose JSON body is cut off.
fn malformed() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(r#"{"choices": [ this is not JSON (injected by the mock upstream)"#)
}

/// A reply whose body fails before its first chunk: actix-web then closes the connection without
/// writing even the status line, so the client sees the connection close mid-exchange.
fn dropped() -> HttpResponse {
    let broken = futures_util::stream::once(async {
        Err::<web::Bytes, _>(io::Error::new(io::ErrorKind::ConnectionAborted, "dropped (injected)"))
    });
    HttpResponse::Ok().streaming(broken)
}

fn add_rpm_headers(response: &mut HttpResponse, rpm: RpmState) {
    let headers = response.headers_mut();
    let reset = format_secs(rpm.reset);
    for (name, value) in [
        ("x-ratelimit-limit-requests", HeaderValue::from(rpm.limit)),
        ("x-ratelimit-remaining-requests", HeaderValue::from(rpm.remaining)),
        (
            "x-ratelimit-reset-requests",
            HeaderValue::from_str(&reset).unwrap_or(HeaderValue::from_static("0s")),
        ),
    ] {
        headers.insert(HeaderName::from_static(name), value);
    }
}

/// `d` as seconds with up to millisecond precision and a unit (`"1.5s"`, `"60s"`), which both
/// OpenAI's reset format and Google's protobuf durations read.
fn format_secs(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    format!("{}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::headers::parse_reset;

    #[test]
    fn rates_adding_past_one_are_refused() {
        let args = MockUpstreamArgs { error_rate: 0.6, drop_rate: 0.6, ..MockUpstreamArgs::default() };
        let error = build(&args, false).err().map(|e| e.kind());
        assert_eq!(error, Some(io::ErrorKind::InvalidInput));
    }

    #[test]
    fn formatted_seconds_read_back() {
        for ms in [0, 1, 300, 1500, 59_999, 60_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_reset(&format_secs(d)), Some(d), "{ms}");
        }
        assert_eq!(format_secs(Duration::from_micros(1)), "0.001s");
    }
}
