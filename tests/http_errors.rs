//! Bad input across the HTTP API: each case is answered with the right 4xx and a JSON error
//! (`{"error": {"message", "type", "param"?}}`) naming the field, and the server keeps serving.

mod common;

use common::{ADMIN_KEY, INFERENCE_KEY, TestServer, client, error_names, error_parts, http_config, json_of};
use ferry::http::Keys;
use serde_json::json;

/// The body limit the table's server runs with.
const MAX_BODY: usize = 64 * 1024;

/// How a case sends its body.
enum Body {
    None,
    Json(String),
    Typed(&'static str, String),
}

struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    key: Option<&'static str>,
    body: Body,
    status: u16,
    /// The `param` the error must carry, or (when it starts with `~`) a fragment its message
    /// must contain.
    names: String,
}

fn case(
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Body,
    status: u16,
    names: &str,
) -> Case {
    Case { name, method, path, key: Some(ADMIN_KEY), body, status, names: names.to_string() }
}

fn json(text: impl Into<String>) -> Body {
    Body::Json(text.into())
}

fn prompts_json(n: usize) -> Body {
    json(json!({ "prompts": vec!["p"; n] }).to_string())
}

fn cases() -> Vec<Case> {
    use Body::{None as NoBody, Typed};
    let (post, get) = ("POST", "GET");
    let (one, many) = ("/api/v1/prompt", "/api/v1/prompts");
    let (size, delay) = ("/api/v1/config/batch-size", "/api/v1/config/batch-delay");
    let mut cases = vec![
        case("prompt: malformed JSON", post, one, json("{\"prompt\": "), 400, "~invalid JSON"),
        case("prompt: missing field", post, one, json("{}"), 400, "prompt"),
        case("prompt: number", post, one, json("{\"prompt\": 42}"), 400, "prompt"),
        case("prompt: empty", post, one, json("{\"prompt\": \"\"}"), 400, "prompt"),
        case("prompt: blank", post, one, json("{\"prompt\": \"   \"}"), 400, "prompt"),
        case(
            "prompt: unknown field",
            post,
            one,
            json("{\"prompt\": \"x\", \"lane\": \"high\"}"),
            400,
            "lane",
        ),
        case("prompt: array body", post, one, json("[\"x\"]"), 400, "~expected an object like"),
        case(
            "prompt: text/plain",
            post,
            one,
            Typed("text/plain", "{\"prompt\": \"x\"}".into()),
            415,
            "~Content-Type",
        ),
        case(
            "prompt: no content type",
            post,
            one,
            Typed("", "{\"prompt\": \"x\"}".into()),
            415,
            "~Content-Type",
        ),
        case("prompts: empty array", post, many, json("{\"prompts\": []}"), 400, "prompts"),
        case("prompts: 1001 prompts", post, many, prompts_json(1001), 400, "prompts"),
        case("prompts: a string", post, many, json("{\"prompts\": \"x\"}"), 400, "prompts"),
        case("prompts: missing", post, many, json("{}"), 400, "prompts"),
        case("prompts: null", post, many, json("{\"prompts\": null}"), 400, "prompts"),
        case(
            "prompts: number at 3",
            post,
            many,
            json("{\"prompts\": [\"a\", \"b\", \"c\", 4]}"),
            400,
            "prompts[3]",
        ),
        case(
            "prompts: empty string at 2",
            post,
            many,
            json("{\"prompts\": [\"a\", \"b\", \"\"]}"),
            400,
            "prompts[2]",
        ),
        case("prompts: null entry", post, many, json("{\"prompts\": [null]}"), 400, "prompts[0]"),
        case(
            "prompts: object without prompt",
            post,
            many,
            json("{\"prompts\": [\"a\", {}]}"),
            400,
            "prompts[1].prompt",
        ),
        case(
            "prompts: object prompt not a string",
            post,
            many,
            json("{\"prompts\": [{\"prompt\": [1]}]}"),
            400,
            "prompts[0].prompt",
        ),
        case(
            "prompts: object with unknown field",
            post,
            many,
            json("{\"prompts\": [{\"text\": \"a\"}]}"),
            400,
            "prompts[0].text",
        ),
        case("prompts: malformed JSON", post, many, json("{\"prompts\": [\"a\",]}"), 400, "~invalid JSON"),
        case(
            "prompts: over max_body_bytes",
            post,
            many,
            json(format!("{{\"prompts\": [\"{}\"]}}", "x".repeat(MAX_BODY))),
            413,
            "~larger than",
        ),
        case(
            "prompts: form content type",
            post,
            many,
            Typed("application/x-www-form-urlencoded", "prompts=a".into()),
            415,
            "~Content-Type",
        ),
        case("batch-size: zero", post, size, json("{\"size\": 0}"), 400, "size"),
        case("batch-size: negative", post, size, json("{\"size\": -5}"), 400, "size"),
        case("batch-size: float", post, size, json("{\"size\": 2.5}"), 400, "size"),
        case("batch-size: string", post, size, json("{\"size\": \"10\"}"), 400, "size"),
        case("batch-size: missing", post, size, json("{}"), 400, "size"),
        case("batch-size: too large", post, size, json("{\"size\": 1000000}"), 400, "size"),
        case("batch-size: misspelt field", post, size, json("{\"batch_size\": 5}"), 400, "batch_size"),
        case("batch-delay: negative", post, delay, json("{\"delay_ms\": -1}"), 400, "delay_ms"),
        case("batch-delay: float", post, delay, json("{\"delay_ms\": 1.5}"), 400, "delay_ms"),
        case("batch-delay: missing", post, delay, json("{}"), 400, "delay_ms"),
        case("batch-delay: boolean", post, delay, json("{\"delay_ms\": true}"), 400, "delay_ms"),
        case(
            "batch-delay: null body",
            post,
            delay,
            json("null"),
            400,
            "~expected an object like {\"delay_ms\"",
        ),
        case("unknown route", get, "/api/v1/nope", NoBody, 404, "~no endpoint GET"),
        case("wrong method on prompts", get, many, NoBody, 405, "~method not allowed"),
        case("wrong method on health", post, "/health", json("{}"), 405, "~method not allowed"),
        case("wrong method on config", "DELETE", "/api/v1/config", NoBody, 405, "~method not allowed"),
    ];
    let auth = [
        ("no key on prompt", post, one, None, 401, "~Authorization: Bearer"),
        ("unknown key on prompt", post, one, Some("wrong-key"), 401, "~unknown API key"),
        ("no key on metrics", get, "/metrics", None, 401, "~Authorization: Bearer"),
        ("no key on stats", get, "/api/v1/stats", None, 401, "~Authorization: Bearer"),
        ("inference key on config", get, "/api/v1/config", Some(INFERENCE_KEY), 403, "~admin key"),
        ("inference key on batch-size", post, size, Some(INFERENCE_KEY), 403, "~admin key"),
        (
            "inference key on encoded config path",
            post,
            "/api/v1/%63onfig/batch-size",
            Some(INFERENCE_KEY),
            403,
            "~admin key",
        ),
    ];
    for (name, method, path, key, status, names) in auth {
        let body = json("{\"prompt\": \"x\", \"size\": 3}");
        cases.push(Case { name, method, path, key, body, status, names: names.to_string() });
    }
    cases
}

#[actix_rt::test]
async fn every_bad_request_gets_its_status_and_names_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    config.server.max_body_bytes = MAX_BODY;
    let server = TestServer::start_with(config, Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]), dir);
    let cases = cases();
    assert!(cases.len() >= 30, "the table should hold at least 30 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("method");
        let mut request = client().request(method, server.url(case.path));
        if let Some(key) = case.key {
            request = request.bearer_auth(key);
        }
        request = match &case.body {
            Body::None => request,
            Body::Json(text) => request.header("content-type", "application/json").body(text.clone()),
            Body::Typed("", text) => request.body(text.clone()),
            Body::Typed(kind, text) => request.header("content-type", *kind).body(text.clone()),
        };
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                failures.push(format!("{}: no response: {e}", case.name));
                continue;
            }
        };
        let (status, body) = json_of(response).await;
        if status != case.status {
            failures.push(format!("{}: status {status}, expected {}: {body}", case.name, case.status));
            continue;
        }
        let named = error_names(&body, &case.names);
        if !named {
            failures.push(format!("{}: error does not name {:?}: {body}", case.name, case.names));
        }
        if let Some(key) = case.key {
            assert!(!body.to_string().contains(key), "{}: the key is echoed: {body}", case.name);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    let (status, body) = json_of(client().get(server.url("/health")).send().await.expect("health")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "the server still answers");
    let good = client()
        .post(server.url("/api/v1/prompt"))
        .bearer_auth(INFERENCE_KEY)
        .json(&json!({"prompt": "still here?"}));
    let (status, body) = json_of(good.send().await.expect("prompt")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("success")), "{body}");
    server.stop().await;
}

#[actix_rt::test]
async fn an_unknown_route_is_a_json_404_without_keys_too() {
    let server = TestServer::start(Keys::none());
    let (status, body) =
        json_of(client().get(server.url("/v2/anything?x=1")).send().await.expect("request")).await;
    assert_eq!(status, 404);
    let (message, _) = error_parts(&body);
    // The method and what to read; not the path, which may carry what the caller pasted.
    assert!(message.contains("no endpoint GET") && message.contains("docs/api.md"), "{message}");
    assert!(!message.contains("anything") && !message.contains("x=1"), "{message}");
    server.stop().await;
}
