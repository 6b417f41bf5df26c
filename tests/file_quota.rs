//! `[files] max_bytes_per_owner`: a key's files together stay under the quota; an upload past it
//! is refused with 413 naming the setting, other keys are not affected, and deleting makes room.

mod common;

use common::files::{Part, upload};
use common::{ADMIN_KEY, TestServer, call, http_config};
use ferry::http::Keys;

const KEY_A: &str = "test-quota-owner-a-01";
const KEY_B: &str = "test-quota-owner-b-02";

fn batch_file(bytes: usize) -> Vec<u8> {
    let line = br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}"#;
    let mut content = Vec::new();
    while content.len() + line.len() < bytes {
        content.extend_from_slice(line);
        content.push(b'\n');
    }
    content
}

#[actix_rt::test]
async fn uploads_past_the_owners_quota_are_refused_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.files.max_bytes_per_owner = 1_000;
    let server = TestServer::start_with(config, Keys::new(&[KEY_A, KEY_B], &[ADMIN_KEY]), dir);
    let content = batch_file(600);
    let parts = [Part::Text("purpose", "batch"), Part::File("file", "requests.jsonl", &content)];

    let (status, first) = upload(&server.base, Some(KEY_A), &parts).await;
    assert_eq!(status, 200, "{first}");
    let (status, refused) = upload(&server.base, Some(KEY_A), &parts).await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"]["param"], "file", "{refused}");
    let message = refused["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_bytes_per_owner") && message.contains("1000"), "{message}");

    // Another key has its own quota.
    let (status, other) = upload(&server.base, Some(KEY_B), &parts).await;
    assert_eq!(status, 200, "{other}");

    // Deleting makes room again; nothing of the refused upload was kept.
    let (_, list) = call(&server.base, "GET", "/v1/files", Some(KEY_A), None).await;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "{list}");
    let id = first["id"].as_str().expect("id");
    let (status, _) = call(&server.base, "DELETE", &format!("/v1/files/{id}"), Some(KEY_A), None).await;
    assert_eq!(status, 200);
    let (status, again) = upload(&server.base, Some(KEY_A), &parts).await;
    assert_eq!(status, 200, "{again}");
    server.stop().await;
}
