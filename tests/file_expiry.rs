//! Files that expire: OpenAI's `expires_after` on upload, and a lifetime for batch output files
//! (`[files] output_lifetime_secs`). Expiry runs with "now" passed in, as the background task
//! passes the clock's.

mod common;

use std::time::{Duration, Instant};

use common::files::{Part, upload, upload_batch};
use common::{TestServer, call, http_config};
use ferry::http::Keys;
use ferry::store::Store;
use serde_json::json;

#[actix_rt::test]
async fn uploads_and_batch_outputs_expire_and_are_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.files.output_lifetime_secs = 7_200;
    let db = config.storage.path.clone();
    let server = TestServer::start_with(config, Keys::none(), dir);
    let content = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"mock","messages":[{"role":"user","content":"hi"}]}}"#;

    let bad = [
        Part::Text("purpose", "batch"),
        Part::Text("expires_after[anchor]", "created_at"),
        Part::Text("expires_after[seconds]", "59"),
        Part::File("file", "requests.jsonl", content),
    ];
    let (status, refused) = upload(&server.base, None, &bad).await;
    assert_eq!(
        (status, refused["error"]["param"].as_str()),
        (400, Some("expires_after[seconds]")),
        "{refused}"
    );

    let parts = [
        Part::Text("purpose", "batch"),
        Part::Text("expires_after[anchor]", "created_at"),
        Part::Text("expires_after[seconds]", "3600"),
        Part::File("file", "requests.jsonl", content),
    ];
    let (status, file) = upload(&server.base, None, &parts).await;
    assert_eq!(status, 200, "{file}");
    let created = file["created_at"].as_i64().expect("created_at");
    assert_eq!(file["expires_at"].as_i64(), Some(created + 3_600), "{file}");
    let id = file["id"].as_str().expect("id").to_string();

    // A batch's output file gets the configured lifetime.
    let input = upload_batch(&server.base, None, content).await;
    let create =
        json!({"input_file_id": input, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (_, batch) = call(&server.base, "POST", "/v1/batches", None, Some(create)).await;
    let path = format!("/v1/batches/{}", batch["id"].as_str().expect("batch id"));
    let deadline = Instant::now() + Duration::from_secs(60);
    let batch = loop {
        let (_, batch) = call(&server.base, "GET", &path, None, None).await;
        if batch["status"] == "completed" {
            break batch;
        }
        assert!(Instant::now() < deadline, "batch never completed: {batch}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let output_id = batch["output_file_id"].as_str().expect("output file").to_string();
    let (_, output) = call(&server.base, "GET", &format!("/v1/files/{output_id}"), None, None).await;
    let output_created = output["created_at"].as_i64().expect("created_at");
    assert_eq!(output["expires_at"].as_i64(), Some(output_created + 7_200), "{output}");

    let store = Store::open(&db).expect("a second handle on the store");
    assert_eq!(store.expire_files(created + 3_599, 10).await.expect("expire"), 0, "not yet");
    assert_eq!(store.expire_files(created + 3_600, 10).await.expect("expire"), 1, "the upload");
    let (status, _) = call(&server.base, "GET", &format!("/v1/files/{id}"), None, None).await;
    assert_eq!(status, 404);
    assert!(!server.dir().join("data/files").join(&id).exists(), "its content is removed");
    // The input upload has no lifetime; the output expires 2 h after it was written.
    assert_eq!(store.expire_files(output_created + 7_200, 10).await.expect("expire"), 1, "the output");
    let (status, _) = call(&server.base, "GET", &format!("/v1/files/{output_id}"), None, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(&server.base, "GET", &format!("/v1/files/{input}"), None, None).await;
    assert_eq!(status, 200, "a file without a lifetime stays");
    server.stop().await;
}
