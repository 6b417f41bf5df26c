//! After a batch's answers move to its output file, nothing of them stays readable in the
//! database's files: not in `ferry.db` (secure_delete zeroes what is dropped), not in
//! `ferry.db-wal` (checkpointed and truncated after the drop), not in `ferry.db-shm`.

mod common;

use std::time::{Duration, Instant};

use common::files::{download, upload_batch};
use common::{TestServer, call};
use ferry::http::Keys;
use serde_json::json;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[actix_rt::test]
async fn a_finished_batchs_answers_leave_no_trace_in_the_database_files() {
    let server = TestServer::start(Keys::none());
    let canary = format!("canary-answer-{}", ulid::Ulid::new().to_string().to_lowercase());
    let lines: Vec<String> = (0..40)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "method": "POST", "url": "/v1/chat/completions",
                   "body": {"model": "mock", "messages": [{"role": "user", "content": format!("{canary} {i}")}]}})
            .to_string()
        })
        .collect();
    let file = upload_batch(&server.base, None, lines.join("\n").as_bytes()).await;
    let create =
        json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (status, batch) = call(&server.base, "POST", "/v1/batches", None, Some(create)).await;
    assert_eq!(status, 200, "{batch}");
    let path = format!("/v1/batches/{}", batch["id"].as_str().expect("id"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch = loop {
        let (_, batch) = call(&server.base, "GET", &path, None, None).await;
        if batch["status"] == "completed" {
            break batch;
        }
        assert!(Instant::now() < deadline, "batch never completed: {batch}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // The answers are in the output file (the mock echoes the prompt)...
    let output = batch["output_file_id"].as_str().expect("output file");
    let (status, _, bytes) = download(&server.base, None, output).await;
    assert_eq!(status, 200);
    assert!(contains(&bytes, &format!("mock answer to: {canary} 39")), "the output holds the answers");
    // ...and nowhere in the database's files.
    let data = server.dir().join("data");
    let mut looked = 0;
    for suffix in ["", "-wal", "-shm"] {
        let file = data.join(format!("ferry.db{suffix}"));
        if let Ok(bytes) = std::fs::read(&file) {
            looked += 1;
            assert!(!contains(&bytes, &canary), "an answer is still in {}", file.display());
        }
    }
    assert!(looked >= 1, "no database file found in {}", data.display());
    server.stop().await;
}
