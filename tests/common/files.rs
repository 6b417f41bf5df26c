//! Files API helpers: multipart forms built by hand, upload and download.

use serde_json::{Value, json};

use super::{client, json_of};

/// The boundary of every form the tests build.
pub const BOUNDARY: &str = "ferry-test-boundary-7d1e0c";

/// One batch input line: a chat request for model `mock` asking `prompt`, as `custom_id`.
pub fn batch_line(custom_id: &str, prompt: &str) -> String {
    json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "mock", "messages": [{"role": "user", "content": prompt}]}})
    .to_string()
}

/// A batch input file of `n` lines, `req-1` asking "question 1" and so on.
pub fn batch_file(n: usize) -> Vec<u8> {
    let lines: Vec<String> =
        (1..=n).map(|i| batch_line(&format!("req-{i}"), &format!("question {i}"))).collect();
    (lines.join("\n") + "\n").into_bytes()
}

/// One part of a multipart form.
pub enum Part<'a> {
    /// A text field.
    Text(&'a str, &'a str),
    /// A file field: name, file name, content.
    File(&'a str, &'a str, &'a [u8]),
}

/// A `multipart/form-data` body of `parts`, built by hand.
pub fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part {
            Part::Text(name, value) => {
                body.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                );
                body.extend_from_slice(value.as_bytes());
            }
            Part::File(name, filename, content) => {
                body.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                         Content-Type: application/jsonl\r\n\r\n"
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(content);
            }
        }
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Posts `parts` to `/v1/files`; returns the status and JSON body.
pub async fn upload(base: &str, key: Option<&str>, parts: &[Part<'_>]) -> (u16, Value) {
    let mut request = client()
        .post(format!("{base}/v1/files"))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(form(parts));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    json_of(request.send().await.expect("upload")).await
}

/// Uploads `content` as a batch file and returns its id.
pub async fn upload_batch(base: &str, key: Option<&str>, content: &[u8]) -> String {
    let (status, body) =
        upload(base, key, &[Part::Text("purpose", "batch"), Part::File("file", "requests.jsonl", content)])
            .await;
    assert_eq!(status, 200, "{body}");
    body["id"].as_str().expect("id").to_string()
}

/// `GET /v1/files/{id}/content`: status, content type and bytes.
pub async fn download(base: &str, key: Option<&str>, id: &str) -> (u16, String, Vec<u8>) {
    let mut request = client().get(format!("{base}/v1/files/{id}/content"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.expect("download");
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let bytes = response.bytes().await.expect("content").to_vec();
    (status, content_type, bytes)
}
