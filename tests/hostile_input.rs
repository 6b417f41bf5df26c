//! Hostile input against a server with ONE HTTP worker, so a request that held the worker would
//! hold every other caller too: bodies just under `max_body_bytes`, as large as the schema
//! allows, with one wrong-typed field at the end, sent while another client polls `/health`.
//! The bad request gets its 400 naming the field, and polls keep being answered while it is
//! read and refused. Orders and counts are asserted, never times.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::files::upload_batch;
use common::{TestServer, client, http_config, json_of};
use ferry::config::ServerConfig;
use ferry::http::Keys;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `max_body_bytes` in these tests.
const LIMIT: usize = 10 * 1024 * 1024;

fn one_worker_server() -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.server = ServerConfig { workers: 1, max_body_bytes: LIMIT, ..config.server };
    TestServer::start_with(config, Keys::none(), dir)
}

/// Polls `/health` on a kept-alive connection until told to stop; counts the answers and
/// remembers any that was not a 200.
struct Poller {
    answered: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: actix_rt::task::JoinHandle<()>,
}

impl Poller {
    fn start(base: &str) -> Poller {
        let answered = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{base}/health");
        let (a, f, s) = (answered.clone(), failed.clone(), stop.clone());
        let task = actix_rt::spawn(async move {
            let http = reqwest::Client::new();
            while !s.load(Ordering::Acquire) {
                match http.get(&url).send().await {
                    Ok(response) if response.status() == 200 => {
                        let _ = response.bytes().await;
                        a.fetch_add(1, Ordering::AcqRel);
                    }
                    _ => {
                        f.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
        });
        Poller { answered, failed, stop, task }
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Acquire)
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Release);
        let (answered, failed) = (self.answered.clone(), self.failed.clone());
        let _ = self.task.await;
        (answered.load(Ordering::Acquire), failed.load(Ordering::Acquire))
    }
}

/// Sends `body` to `path` over a raw connection; returns how many polls were answered between
/// the last byte sent and the reply read, and the reply's status and JSON body.
async fn send_while_polling(server: &TestServer, path: &str, body: &[u8]) -> (usize, u16, Value) {
    let poller = Poller::start(&server.base);
    // The poller is answered before the big request starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    while poller.answered() == 0 {
        assert!(Instant::now() < deadline, "/health was never answered");
        tokio::task::yield_now().await;
    }
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let sent = poller.answered();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.expect("read reply");
    let meanwhile = poller.answered() - sent;
    eprintln!("{path}: {meanwhile} polls answered while the body was read and refused");
    let (answered, failed) = poller.stop().await;
    assert_eq!(failed, 0, "a /health poll failed ({answered} answered)");
    let text = String::from_utf8_lossy(&reply);
    let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let json = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (meanwhile, status, serde_json::from_str(json).unwrap_or(Value::Null))
}

/// `{"model": "m", "messages": [N × a message], "temperature": "hot"}`, just under `LIMIT`.
fn huge_completion(secret: &str) -> Vec<u8> {
    let message = r#"{"role":"user","content":"x"},"#;
    let tail = format!(r#"{{"role":"user","content":"x"}}],"temperature":"{secret}"}}"#);
    let head = r#"{"model":"mock","messages":["#;
    let count = (LIMIT - head.len() - tail.len() - 64) / message.len();
    let mut body = Vec::with_capacity(LIMIT);
    body.extend_from_slice(head.as_bytes());
    for _ in 0..count {
        body.extend_from_slice(message.as_bytes());
    }
    body.extend_from_slice(tail.as_bytes());
    assert!(body.len() < LIMIT && body.len() > LIMIT - 1024);
    body
}

#[actix_rt::test]
async fn a_huge_completion_with_a_wrong_field_is_refused_while_health_answers() {
    let server = one_worker_server();
    let secret = "canary-hostile-prompt-4f1e";
    let (meanwhile, status, reply) =
        send_while_polling(&server, "/v1/chat/completions", &huge_completion(secret)).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "temperature", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains(secret), "{message}");
    assert!(message.contains("got a string of 26 bytes"), "{message}");
    assert!(meanwhile > 0, "no /health poll was answered while the body was refused");
    server.stop().await;
}

#[actix_rt::test]
async fn many_unknown_keys_are_ignored_in_one_pass() {
    // The shape that froze the old error path: thousands of top-level keys, one bad field.
    let server = one_worker_server();
    let mut body = String::from(r#"{"model":"mock","messages":[{"role":"user","content":"x"}]"#);
    for i in 0..200_000 {
        body.push_str(&format!(r#","k{i}":{i}"#));
    }
    body.push_str(r#","max_tokens":"many"}"#);
    let (meanwhile, status, reply) =
        send_while_polling(&server, "/v1/chat/completions", body.as_bytes()).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "max_tokens", "{reply}");
    assert!(meanwhile > 0, "no /health poll was answered while the body was refused");
    server.stop().await;
}

#[actix_rt::test]
async fn a_huge_batch_create_with_a_wrong_field_is_refused_while_health_answers() {
    let server = one_worker_server();
    let pair = r#""key-00000000":"value","#;
    let head = r#"{"input_file_id":"file-x","endpoint":"/v1/chat/completions","metadata":{"#;
    let tail = r#""last":"value"},"completion_window":24}"#;
    let count = (LIMIT - head.len() - tail.len() - 64) / pair.len();
    let mut body = Vec::with_capacity(LIMIT);
    body.extend_from_slice(head.as_bytes());
    for i in 0..count {
        body.extend_from_slice(format!(r#""key-{i:08}":"value","#).as_bytes());
    }
    body.extend_from_slice(tail.as_bytes());
    let (meanwhile, status, reply) = send_while_polling(&server, "/v1/batches", &body).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "completion_window", "{reply}");
    assert!(meanwhile > 0, "no /health poll was answered while the body was refused");
    server.stop().await;
}

#[actix_rt::test]
async fn a_batch_file_of_huge_bad_lines_is_refused_by_the_job_worker_while_health_answers() {
    let server = one_worker_server();
    let secret = "canary-hostile-line-8d2c";
    let mut file = Vec::new();
    for n in 0..8 {
        file.extend_from_slice(format!(r#"{{"custom_id":"r{n}","method":"POST","url":"/v1/chat/completions","body":{{"model":"mock","messages":["#).as_bytes());
        for _ in 0..20_000 {
            file.extend_from_slice(br#"{"role":"user","content":"x"},"#);
        }
        file.extend_from_slice(
            format!(r#"{{"role":"user","content":"x"}}],"seed":"{secret}"}}}}"#).as_bytes(),
        );
        file.push(b'\n');
    }
    let id = upload_batch(&server.base, None, &file).await;
    let poller = Poller::start(&server.base);
    let create = serde_json::json!({"input_file_id": id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, batch) =
        json_of(client().post(server.url("/v1/batches")).json(&create).send().await.expect("create")).await;
    assert_eq!(status, 200, "{batch}");
    let batch_id = batch["id"].as_str().expect("id").to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch = loop {
        let (_, batch) =
            json_of(client().get(server.url(&format!("/v1/batches/{batch_id}"))).send().await.expect("get"))
                .await;
        if batch["status"] != "validating" {
            break batch;
        }
        assert!(Instant::now() < deadline, "still validating: {batch}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (answered, failed) = poller.stop().await;
    assert_eq!(batch["status"], "failed", "{batch}");
    let errors = batch["errors"]["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 8, "{batch}");
    for error in &errors {
        assert_eq!(error["param"], "body.seed", "{error}");
    }
    assert!(!batch.to_string().contains(secret), "the refused value is in the batch: {batch}");
    assert!(answered > 0 && failed == 0, "/health: {answered} answered, {failed} failed");
    server.stop().await;
}

#[actix_rt::test]
async fn a_long_priority_header_is_not_echoed() {
    let server = one_worker_server();
    let value = "P".repeat(8 * 1024);
    let body = serde_json::json!({"model": "mock", "messages": [{"role": "user", "content": "hi"}]});
    let request =
        client().post(server.url("/v1/chat/completions")).header("x-ferry-priority", &value).json(&body);
    let (status, reply) = json_of(request.send().await.expect("send")).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["param"], "x-ferry-priority");
    let text = reply.to_string();
    assert!(!text.contains("PPPP") && text.len() < 512, "{text}");
    server.stop().await;
}

#[actix_rt::test]
async fn an_unknown_field_name_is_cut_and_escaped() {
    let server = one_worker_server();
    let name = format!("secret\"{}", "n".repeat(1000));
    let body = format!(
        r#"{{"username":"u","request_id":"r","prompt":"p","created_at":"2026-02-01T12:00:00Z","priority":"HIGH","{}":1}}"#,
        name.replace('"', "\\\"")
    );
    let request =
        client().post(server.url("/v1/query")).header("content-type", "application/json").body(body);
    let (status, reply) = json_of(request.send().await.expect("send")).await;
    assert_eq!(status, 400, "{reply}");
    let param = reply["error"]["param"].as_str().unwrap_or_default();
    assert!(param.starts_with("secret\\\"nnn") && param.len() <= 64 + 3, "{param}");
    assert!(!reply.to_string().contains(&"n".repeat(100)), "{reply}");
    server.stop().await;
}

#[actix_rt::test]
async fn ids_and_paths_from_the_caller_are_not_echoed() {
    let server = one_worker_server();
    let secret = "sk-canary-pasted-into-a-path-77aa";
    let long = "x".repeat(4 * 1024);
    let cases = [
        ("GET", format!("/v1/batches/{secret}"), 404),
        ("GET", format!("/v1/batches/{long}"), 404),
        ("POST", format!("/v1/batches/{secret}/cancel"), 404),
        ("GET", format!("/v1/files/{secret}"), 404),
        ("GET", format!("/v1/files/{secret}/content"), 404),
        ("GET", format!("/v1/{secret}"), 404),
        ("DELETE", format!("/v1/batches/{secret}"), 405),
        ("POST", format!("/api/v1/config/lanes/{secret}"), 400),
    ];
    for (method, path, expected) in cases {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let request =
            client().request(method.clone(), server.url(&path)).json(&serde_json::json!({"max_batch": 4}));
        let (status, reply) = json_of(request.send().await.expect("send")).await;
        assert_eq!(status, expected, "{method} {path}: {reply}");
        let text = reply.to_string();
        assert!(!text.contains(secret) && !text.contains("xxxx"), "{method} {path}: {text}");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
    }
    server.stop().await;
}
