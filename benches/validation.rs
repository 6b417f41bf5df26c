//! What validating a request body costs as it grows: `POST /v1/chat/completions` bodies of 1 MB
//! and 10 MB, each ending in one wrong-typed field (the refused path, the one that was quadratic),
//! parsed by the same function the HTTP door and the batch validator use
//! ([`ferry::request_json::parse`] into [`CompletionRequest`]). Two shapes: many messages, and
//! many unknown top-level keys (which a chat request accepts and skips).
//!
//! `cargo bench --bench validation` prints the median of `FERRY_BENCH_RUNS` (9) parses per size
//! and the ratio of the 10 MB time to ten times the 1 MB time: 1.0 is linear; the target is at
//! most 2.5.

use std::time::{Duration, Instant};

use ferry::chat_format::CompletionRequest;
use ferry::request_json;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const MB: usize = 1024 * 1024;

/// `{"model", "messages": [...], "temperature": "hot"}` of about `size` bytes.
fn messages_body(size: usize) -> Vec<u8> {
    let message = br#"{"role":"user","content":"What is the capital of France?"},"#;
    let mut body = br#"{"model":"mock","messages":["#.to_vec();
    while body.len() + message.len() + 80 < size {
        body.extend_from_slice(message);
    }
    body.extend_from_slice(br#"{"role":"user","content":"x"}],"temperature":"hot"}"#);
    body
}

/// `{"model", "messages", "k0": 0, "k1": 1, …, "max_tokens": "many"}` of about `size` bytes.
fn keys_body(size: usize) -> Vec<u8> {
    let mut body = br#"{"model":"mock","messages":[{"role":"user","content":"x"}]"#.to_vec();
    let mut i = 0u64;
    while body.len() + 40 < size {
        body.extend_from_slice(format!(r#","key{i}":{i}"#).as_bytes());
        i += 1;
    }
    body.extend_from_slice(br#","max_tokens":"many"}"#);
    body
}

fn median_parse(body: &[u8], runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let refused = request_json::parse::<CompletionRequest>(body).is_err();
            let took = started.elapsed();
            assert!(refused, "the body must be refused");
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let runs = std::env::var("FERRY_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(9);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "validation: median of {runs} parses per body, {cores} cores shared with the rest of the machine"
    );
    for (shape, make) in [("messages", messages_body as fn(usize) -> Vec<u8>), ("unknown keys", keys_body)] {
        let small = make(MB);
        let large = make(10 * MB);
        let t1 = median_parse(&small, runs);
        let t10 = median_parse(&large, runs);
        let ratio = t10.as_secs_f64() / (10.0 * t1.as_secs_f64());
        println!(
            "{shape:>13}: 1 MB {:>8.2} ms ({:.0} MB/s) | 10 MB {:>8.2} ms ({:.0} MB/s) | 10 MB / (10 × 1 MB) = {ratio:.2} ({})",
            t1.as_secs_f64() * 1000.0,
            small.len() as f64 / MB as f64 / t1.as_secs_f64(),
            t10.as_secs_f64() * 1000.0,
            large.len() as f64 / MB as f64 / t10.as_secs_f64(),
            if ratio <= 2.5 { "within 2.5× of linear" } else { "NOT within 2.5× of linear" },
        );
    }
}
