//! The `openai` provider and the engine against a real LLM server that no one here wrote:
//! llama-cpp-python serving a 0.5B instruct model (`../shared/tools/real-llm-upstream`).
//!
//! Set `FERRY_REAL_LLM_URL` (e.g. `http://127.0.0.1:18081/v1`) to run it. Unset, the test skips
//! with a loud message on stderr — unless `FERRY_REAL_LLM_REQUIRED=1` (CI sets it when the server
//! came up), in which case a missing or unreachable server fails the test.
//!
//! What it checks is the protocol, not the text: every item of a `combined` batch of 4 and a
//! `fanout` batch of 8 ends in `Ok(Answer)` with non-empty text. The combined call carries each
//! prompt's id and the reply's JSON schema as llama-cpp-python takes it (`json_object` with
//! `schema`, `structured_output = "json_object_schema"`), so the server's grammar holds the model
//! to an object with exactly those ids; any item whose id still comes back missing or unusable is
//! sent alone. The upstream's calls must be 1 plus the items sent alone, and every item answered;
//! the test prints which items came from the combined call.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry::config::{Config, LaneConfig, Mode, ProviderKind, StructuredOutput, UpstreamConfig};
use ferry::engine::{Engine, MetricsEvent, Outcome, Prompt, UpstreamStatus};
use tokio::sync::broadcast::{self, error::TryRecvError};

/// `eprintln!` straight to the process's stderr. libtest captures `eprintln!` and shows it only
/// when a test fails, which would hide the skip banner and the report of what the model did;
/// a direct write to `std::io::stderr()` is not captured, so it shows up in every `cargo test`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

const URL_VAR: &str = "FERRY_REAL_LLM_URL";
const REQUIRED_VAR: &str = "FERRY_REAL_LLM_REQUIRED";
/// The name `real-llm-upstream` serves the model under (any name gets the loaded model).
const MODEL: &str = "qwen2.5-coder-0.5b-instruct";
const UPSTREAM: &str = "real-llm";
/// The whole test, including waiting for the server; ~13 calls of 1–3 s each on an idle machine.
const WHOLE_TEST: Duration = Duration::from_secs(300);
/// How long to wait for `GET /models` before calling the server unreachable.
const REACH_WITHIN: Duration = Duration::from_secs(30);

const COMBINED_PROMPTS: [&str; 4] = [
    "What is 2 + 2? Answer with a number.",
    "What is the capital of France? One word.",
    "What colour is the sky on a clear day? One word.",
    "Name one animal that says meow. One word.",
];

const FANOUT_PROMPTS: [&str; 8] = [
    "What is 3 + 4? Answer with a number.",
    "What is the capital of Italy? One word.",
    "What colour is grass? One word.",
    "Name a fruit that is yellow. One word.",
    "How many days are in a week? Answer with a number.",
    "What is the opposite of hot? One word.",
    "Name a programming language. One word.",
    "What is 10 minus 3? Answer with a number.",
];

/// The server's base URL, or None (after the skip banner) when the test should not run.
fn real_llm_url() -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().trim_end_matches('/').to_string()),
        _ => {
            common::skip::skip(
                &format!("real LLM test: {URL_VAR} is not set"),
                "set it to an OpenAI-compatible server (e.g. http://127.0.0.1:18081/v1); \
                 ../shared/tools/real-llm-upstream [PORT] starts one",
                REQUIRED_VAR,
            );
            None
        }
    }
}

/// Waits until `GET {url}/models` answers 2xx. A URL that was given but never answers is a
/// failure whether or not the test is required: whoever set it meant the test to run.
async fn wait_until_reachable(url: &str) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("http client");
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < REACH_WITHIN {
        match client.get(format!("{url}/models")).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => last = format!("HTTP {}", response.status()),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!(
        "the real LLM server at {URL_VAR}={url} did not answer GET /models within {REACH_WITHIN:?} \
         (last: {last}); required={}",
        common::skip::required(REQUIRED_VAR)
    );
}

fn lane(rank: u32, window_ms: u64, max_batch: usize, mode: Mode) -> LaneConfig {
    LaneConfig {
        rank,
        window_ms,
        max_batch: Some(max_batch),
        delay_ms: Some(0),
        // Per item; a combined call gets this times its item count.
        max_tokens: Some(48),
        latency_ms: 120_000,
        mode,
        queue_capacity: None,
        model: None,
        ..LaneConfig::default()
    }
}

fn config(url: &str) -> Config {
    let upstream = UpstreamConfig {
        provider: ProviderKind::Openai,
        base_url: Some(url.to_string()),
        api_key_env: None,
        models: vec![MODEL.to_string()],
        // llama-cpp-python serves one request at a time.
        concurrency: ferry::config::Concurrency::Fixed(1),
        // llama-cpp-python takes a schema as {"type": "json_object", "schema": …}.
        structured_output: StructuredOutput::JsonObjectSchema,
        // ~1 s per answer when idle, but the machine may be busy with other builds and tests.
        timeout_ms: 120_000,
        max_retries: 2,
        ..UpstreamConfig::mock(UPSTREAM)
    };
    Config {
        lanes: BTreeMap::from([
            ("combined".to_string(), lane(1, 500, COMBINED_PROMPTS.len(), Mode::Combined)),
            ("fanout".to_string(), lane(0, 200, FANOUT_PROMPTS.len(), Mode::Fanout)),
        ]),
        upstreams: vec![upstream],
        ..Config::default()
    }
}

fn prompts(texts: &[&str]) -> Vec<Prompt> {
    texts.iter().map(|t| Prompt { temperature: Some(0.0), ..Prompt::text(*t) }).collect()
}

/// Asserts every outcome is an answer with non-empty text, printing each.
fn check_answers(lane: &str, texts: &[&str], outcomes: &[Outcome]) {
    assert_eq!(outcomes.len(), texts.len(), "{lane}: one outcome per prompt");
    for (i, (prompt, outcome)) in texts.iter().zip(outcomes).enumerate() {
        match outcome {
            Ok(answer) => {
                say!("  [{lane} {i}] {prompt:?} -> {:?} (attempts {})", answer.text, answer.attempts);
                assert!(!answer.text.trim().is_empty(), "{lane} item {i} ({prompt:?}): empty answer");
                assert_eq!(&*answer.upstream, UPSTREAM);
            }
            Err(error) => panic!("{lane} item {i} ({prompt:?}) failed: {error}"),
        }
    }
}

/// The upstream's status from the first report the client makes with nothing in flight once the
/// batch's answers are in (it reports every 250 ms).
async fn status_now(events: &mut broadcast::Receiver<MetricsEvent>) -> UpstreamStatus {
    // Reports queued before the answers came may predate the last calls: skip them.
    while matches!(events.try_recv(), Ok(_) | Err(TryRecvError::Lagged(_))) {}
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(MetricsEvent::Upstream(status))) if &*status.name == UPSTREAM && status.in_flight == 0 => {
                return status;
            }
            Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(broadcast::error::RecvError::Closed)) => panic!("the engine's events stopped"),
            Err(_) => panic!("no status report from {UPSTREAM} with nothing in flight in 10 s"),
        }
    }
}

async fn run(url: String) {
    wait_until_reachable(&url).await;
    let engine = Engine::start(&config(&url)).expect("engine starts");
    let mut events = engine.subscribe();

    // Combined: 4 prompts with ids q1..q4, one upstream call asking for a JSON object keyed by
    // those ids, with its schema. Each item answered from that call has attempts = 1; an item
    // whose id came back missing, twice or without text is sent alone (attempts = 2), so the
    // upstream made 1 call plus one per item sent alone.
    let started = Instant::now();
    let outcomes =
        engine.submit("combined", prompts(&COMBINED_PROMPTS)).await.expect("submit").collect().await;
    let combined_time = started.elapsed();
    let status = status_now(&mut events).await;
    let combined_calls = status.calls;
    say!("combined batch of {} in {combined_time:.1?}:", COMBINED_PROMPTS.len());
    check_answers("combined", &COMBINED_PROMPTS, &outcomes);
    let alone = outcomes.iter().flatten().filter(|a| a.attempts > 1).count() as u64;
    say!(
        "combined: {combined_calls} upstream call(s) for {} items; {} answered from the combined call by id, \
         {alone} sent alone ({} split failure(s))",
        COMBINED_PROMPTS.len(),
        COMBINED_PROMPTS.len() as u64 - alone,
        status.split_failures
    );
    assert_eq!(status.combined_calls, 1, "one combined call: {status:?}");
    assert_eq!(status.resent_alone, alone, "items sent alone are counted: {status:?}");
    assert_eq!(combined_calls, 1 + alone, "1 combined call plus one per item sent alone: {status:?}");

    // Fanout: 8 prompts, 8 calls, one at a time (concurrency 1).
    let started = Instant::now();
    let outcomes = engine.submit("fanout", prompts(&FANOUT_PROMPTS)).await.expect("submit").collect().await;
    let fanout_time = started.elapsed();
    let total_calls = status_now(&mut events).await.calls;
    say!("fanout batch of {} in {fanout_time:.1?}:", FANOUT_PROMPTS.len());
    check_answers("fanout", &FANOUT_PROMPTS, &outcomes);
    assert!(
        total_calls - combined_calls >= FANOUT_PROMPTS.len() as u64,
        "fanout: {} calls for {} items",
        total_calls - combined_calls,
        FANOUT_PROMPTS.len()
    );

    let snapshot = engine.snapshot().await.expect("snapshot");
    let upstream = &snapshot.upstreams[UPSTREAM];
    say!(
        "real LLM upstream: {} calls, {} ok, {} failed, {} retries; {} prompt + {} completion tokens; \
         {} batches, {} items ok, {} failed",
        upstream.calls,
        upstream.ok,
        upstream.failed,
        upstream.retries,
        upstream.prompt_tokens,
        upstream.completion_tokens,
        snapshot.batches,
        snapshot.items_ok,
        snapshot.items_failed
    );
    assert_eq!(snapshot.items_failed, 0);
    assert_eq!(snapshot.items_ok, (COMBINED_PROMPTS.len() + FANOUT_PROMPTS.len()) as u64);
    engine.shutdown(Duration::from_secs(5)).await;
}

#[actix_rt::test]
async fn openai_provider_against_a_real_llm_combined_and_fanout() {
    let Some(url) = real_llm_url() else { return };
    say!("real LLM test against {url} (model {MODEL})");
    let started = Instant::now();
    tokio::time::timeout(WHOLE_TEST, run(url))
        .await
        .unwrap_or_else(|_| panic!("the real LLM test did not finish within {WHOLE_TEST:?}"));
    say!("real LLM test took {:.1?}", started.elapsed());
}
