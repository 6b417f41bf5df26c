//! `/v1/files` over real sockets: upload, retrieve, list, download and delete, byte-exact; the
//! size limit (and that the JSON body limit does not apply); bad forms refused naming the field
//! and leaving nothing on disk; a key never sees another key's files; files survive a restart;
//! content is private to the owner on disk (0600 in a 0700 folder).

mod common;

use std::path::{Path, PathBuf};

use common::files::{BOUNDARY, Part, download, form, upload, upload_batch};
use common::{RunningDaemon, TestServer, call, client, error_names, http_config, json_of};
use ferry::config::Config;
use ferry::http::Keys;
use serde_json::Value;
use tempfile::TempDir;

/// JSONL with bytes that could confuse a form parser: CRLFs, dashes at a line start, and
/// non-UTF-8 bytes. (A sender picks a boundary its content does not hold, so none is in it.)
fn tricky_content() -> Vec<u8> {
    let mut content = Vec::new();
    for i in 0..500 {
        content.extend_from_slice(
            format!(
                "{{\"custom_id\": \"r{i}\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \
                 \"body\": {{\"model\": \"mock\", \"messages\": [{{\"role\": \"user\", \"content\": \"q{i}\"}}]}}}}\r\n"
            )
            .as_bytes(),
        );
    }
    content.extend_from_slice(b"--not-the-boundary\r\n\r\n");
    content.extend_from_slice(&[0, 0xff, 0xfe, b'\r', b'\n', b'-', b'-']);
    content
}

/// What is left in the files folder (temporary files included).
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A test server with `config` changed by `edit`, and its files folder.
fn server_with(keys: Keys, edit: impl FnOnce(&mut Config)) -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let files_dir = dir.path().join("data/files");
    let mut config = http_config(&dir);
    edit(&mut config);
    (TestServer::start_with(config, keys, dir), files_dir)
}

#[actix_rt::test]
async fn upload_retrieve_list_download_and_delete_round_trip_byte_exact() {
    let (server, files_dir) = server_with(Keys::none(), |_| {});
    let base = server.base.clone();
    let content = tricky_content();
    let (status, file) = upload(
        &base,
        None,
        &[Part::File("file", "../dir/requests.jsonl", &content), Part::Text("purpose", "batch")],
    )
    .await;
    assert_eq!(status, 200, "{file}");
    let id = file["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("file-") && id.len() == 31, "{id}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["bytes"].as_u64(), Some(content.len() as u64));
    assert_eq!(file["filename"], "requests.jsonl", "a path in the file name is dropped");
    assert_eq!((file["purpose"].as_str(), file["status"].as_str()), (Some("batch"), Some("processed")));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    assert!(file["created_at"].as_u64().is_some_and(|t| t.abs_diff(now) < 60), "{file}");
    assert!(file.get("owner").is_none(), "{file}");

    let (status, retrieved) = call(&base, "GET", &format!("/v1/files/{id}"), None, None).await;
    assert_eq!((status, &retrieved), (200, &file));
    let (status, listed) = call(&base, "GET", "/v1/files", None, None).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"], Value::Array(vec![file.clone()]));
    assert_eq!((listed["has_more"].as_bool(), listed["first_id"].as_str()), (Some(false), Some(id.as_str())));
    assert_eq!(listed["last_id"].as_str(), Some(id.as_str()));

    let (status, content_type, bytes) = download(&base, None, &id).await;
    assert_eq!((status, content_type.as_str()), (200, "application/octet-stream"));
    assert!(
        bytes == content,
        "downloaded content differs ({} bytes, uploaded {})",
        bytes.len(),
        content.len()
    );
    assert_eq!(std::fs::read(files_dir.join(&id)).expect("content on disk"), content);

    let (status, deleted) = call(&base, "DELETE", &format!("/v1/files/{id}"), None, None).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, serde_json::json!({"id": id, "object": "file", "deleted": true}));
    for (method, path) in [("GET", format!("/v1/files/{id}")), ("DELETE", format!("/v1/files/{id}"))] {
        let (status, body) = call(&base, method, &path, None, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(error_names(&body, "file_id"), "{body}");
    }
    assert_eq!(download(&base, None, &id).await.0, 404);
    let (_, listed) = call(&base, "GET", "/v1/files", None, None).await;
    assert_eq!(listed["data"], Value::Array(Vec::new()), "{listed}");
    assert!(listed.get("first_id").is_none(), "{listed}");
    assert!(files_in(&files_dir).is_empty(), "content removed: {:?}", files_in(&files_dir));
    server.stop().await;
}

#[cfg(unix)]
#[actix_rt::test]
async fn content_is_readable_by_the_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let (server, files_dir) = server_with(Keys::none(), |_| {});
    let id = upload_batch(&server.base, None, b"{\"custom_id\": \"a\"}\n").await;
    let mode = |path: &Path| std::fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&files_dir.join(&id)), 0o600);
    assert_eq!(mode(&files_dir), 0o700);
    server.stop().await;
}

#[actix_rt::test]
async fn the_size_limit_is_413_naming_file_and_the_json_body_limit_does_not_apply() {
    let (server, files_dir) = server_with(Keys::none(), |config| {
        config.files.max_bytes = 4_096;
        config.server.max_body_bytes = 512;
    });
    let base = server.base.clone();
    let at_limit = vec![b'a'; 4_096];
    let id = upload_batch(&base, None, &at_limit).await;
    assert_eq!(
        download(&base, None, &id).await.2.len(),
        4_096,
        "a file over max_body_bytes but at max_bytes"
    );

    let over = vec![b'b'; 4_097];
    let (status, body) =
        upload(&base, None, &[Part::Text("purpose", "batch"), Part::File("file", "big.jsonl", &over)]).await;
    assert_eq!(status, 413, "{body}");
    assert!(error_names(&body, "file"), "{body}");
    assert!(error_names(&body, "~4096"), "the limit is in the message: {body}");
    assert_eq!(files_in(&files_dir), std::slice::from_ref(&id), "nothing left of the refused upload");

    // A declared length far over the limit is refused before the body is read.
    let huge = vec![b'c'; 200_000];
    let (status, body) =
        upload(&base, None, &[Part::Text("purpose", "batch"), Part::File("file", "huge.jsonl", &huge)]).await;
    assert_eq!(status, 413, "{body}");
    assert!(error_names(&body, "file"), "{body}");
    assert_eq!(files_in(&files_dir), [id]);
    server.stop().await;
}

#[actix_rt::test]
async fn bad_uploads_are_refused_naming_the_field_and_leave_nothing() {
    let (server, files_dir) = server_with(Keys::none(), |_| {});
    let base = server.base.clone();
    let line: &[u8] = b"{\"custom_id\": \"a\"}\n";
    let cases: Vec<(&str, Vec<Part<'_>>, &str)> = vec![
        (
            "wrong purpose",
            vec![Part::Text("purpose", "fine-tune"), Part::File("file", "a.jsonl", line)],
            "purpose",
        ),
        (
            "wrong purpose after the file",
            vec![Part::File("file", "a.jsonl", line), Part::Text("purpose", "assistants")],
            "purpose",
        ),
        ("no purpose", vec![Part::File("file", "a.jsonl", line)], "purpose"),
        ("no file", vec![Part::Text("purpose", "batch")], "file"),
        ("empty file", vec![Part::Text("purpose", "batch"), Part::File("file", "a.jsonl", b"")], "file"),
        (
            "two files",
            vec![
                Part::Text("purpose", "batch"),
                Part::File("file", "a.jsonl", line),
                Part::File("file", "b.jsonl", line),
            ],
            "file",
        ),
    ];
    for (what, parts, param) in cases {
        let (status, body) = upload(&base, None, &parts).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(error_names(&body, param), "{what}: expected param {param}: {body}");
    }

    let request = client().post(format!("{base}/v1/files")).json(&serde_json::json!({"purpose": "batch"}));
    let (status, body) = json_of(request.send().await.expect("json upload")).await;
    assert_eq!(status, 415, "not multipart: {body}");
    assert!(error_names(&body, "~multipart/form-data"), "{body}");
    let request =
        client().post(format!("{base}/v1/files")).header("content-type", "multipart/form-data").body("x");
    let (status, body) = json_of(request.send().await.expect("no boundary")).await;
    assert_eq!(status, 400, "multipart without a boundary: {body}");
    let cut_off = form(&[Part::Text("purpose", "batch"), Part::File("file", "a.jsonl", line)]);
    let request = client()
        .post(format!("{base}/v1/files"))
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(cut_off[..cut_off.len() - 20].to_vec());
    let (status, body) = json_of(request.send().await.expect("cut off")).await;
    assert_eq!(status, 400, "a form cut off before its end: {body}");

    assert!(files_in(&files_dir).is_empty(), "left behind: {:?}", files_in(&files_dir));
    let (_, listed) = call(&base, "GET", "/v1/files", None, None).await;
    assert_eq!(listed["data"], Value::Array(Vec::new()), "{listed}");
    let (status, body) = call(&base, "GET", "/v1/files/not-a-file-id", None, None).await;
    assert_eq!(status, 404, "{body}");
    assert!(error_names(&body, "file_id"), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn a_key_never_sees_another_keys_files() {
    const KEY_A: &str = "test-files-owner-a-1";
    const KEY_B: &str = "test-files-owner-b-2";
    let (server, _) = server_with(Keys::new(&[KEY_A, KEY_B], &[]), |_| {});
    let base = server.base.clone();
    let content = b"{\"custom_id\": \"mine\"}\n";
    let id = upload_batch(&base, Some(KEY_A), content).await;

    for (method, path) in [("GET", format!("/v1/files/{id}")), ("DELETE", format!("/v1/files/{id}"))] {
        let (status, body) = call(&base, method, &path, Some(KEY_B), None).await;
        assert_eq!(status, 404, "{method} {path} by another key: {body}");
        assert!(error_names(&body, "file_id"), "{body}");
    }
    let (status, _, bytes) = download(&base, Some(KEY_B), &id).await;
    assert_eq!(status, 404);
    assert!(!String::from_utf8_lossy(&bytes).contains("mine"), "no content in the 404");
    let (status, listed) = call(&base, "GET", "/v1/files", Some(KEY_B), None).await;
    assert_eq!((status, &listed["data"]), (200, &Value::Array(Vec::new())), "{listed}");
    let (status, body) = call(&base, "GET", "/v1/files", None, None).await;
    assert_eq!(status, 401, "no key: {body}");

    let (_, listed) = call(&base, "GET", "/v1/files", Some(KEY_A), None).await;
    assert_eq!(listed["data"][0]["id"].as_str(), Some(id.as_str()), "{listed}");
    assert_eq!(download(&base, Some(KEY_A), &id).await.2, content);
    let (status, body) = call(&base, "DELETE", &format!("/v1/files/{id}"), Some(KEY_A), None).await;
    assert_eq!(status, 200, "the owner deletes: {body}");
    server.stop().await;
}

#[actix_rt::test]
async fn listing_pages_newest_first_and_filters_by_purpose() {
    let (server, _) = server_with(Keys::none(), |_| {});
    let base = server.base.clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(upload_batch(&base, None, format!("{{\"n\": {i}}}\n").as_bytes()).await);
    }
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    let ids_of = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|f| f["id"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let (_, page1) = call(&base, "GET", "/v1/files?limit=2", None, None).await;
    assert_eq!(ids_of(&page1), newest_first[..2], "{page1}");
    assert_eq!(page1["has_more"], true);
    let last = page1["last_id"].as_str().expect("last_id");
    let (_, page2) = call(&base, "GET", &format!("/v1/files?limit=2&after={last}"), None, None).await;
    assert_eq!(
        (ids_of(&page2), &page2["has_more"]),
        (vec![newest_first[2].to_string()], &Value::Bool(false))
    );
    let (_, batch) = call(&base, "GET", "/v1/files?purpose=batch", None, None).await;
    assert_eq!(ids_of(&batch).len(), 3);
    let (_, outputs) = call(&base, "GET", "/v1/files?purpose=batch_output", None, None).await;
    assert!(ids_of(&outputs).is_empty(), "{outputs}");

    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=x", "limit"),
        ("after=nope", "after"),
        ("order=asc", "order"),
    ] {
        let (status, body) = call(&base, "GET", &format!("/v1/files?{query}"), None, None).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(error_names(&body, param), "{query}: {body}");
    }
    server.stop().await;
}

#[actix_rt::test]
async fn files_survive_a_restart() {
    let dir: TempDir = tempfile::tempdir().expect("temp dir");
    let config = || {
        let mut config = http_config(&dir);
        config.server.api_keys_env = "FERRY_HTTP_FILES_TEST_UNSET_KEYS".into();
        config.server.admin_keys_env = "FERRY_HTTP_FILES_TEST_UNSET_ADMIN_KEYS".into();
        config.server.shutdown_grace_ms = 1_000;
        config
    };
    let content = tricky_content();
    let first = RunningDaemon::start(config()).await;
    let id = upload_batch(&first.base, None, &content).await;
    let (_, before) = call(&first.base, "GET", &format!("/v1/files/{id}"), None, None).await;
    first.stop().await;

    let second = RunningDaemon::start(config()).await;
    let (status, after) = call(&second.base, "GET", &format!("/v1/files/{id}"), None, None).await;
    assert_eq!((status, &after), (200, &before));
    let (status, _, bytes) = download(&second.base, None, &id).await;
    assert!(status == 200 && bytes == content, "content after a restart: {status}, {} bytes", bytes.len());
    let (_, listed) = call(&second.base, "GET", "/v1/files", None, None).await;
    assert_eq!(listed["data"][0]["id"].as_str(), Some(id.as_str()), "{listed}");
    second.stop().await;
}
