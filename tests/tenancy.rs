//! Combined calls never mix owners or parameters: two API keys send into a combined lane at
//! once, with different temperatures and reply budgets, and prompts with stop sequences go
//! alone; a mock upstream over a socket records every call it receives.

mod common;

use common::{TestServer, client, http_config, json_of, mock_args, start_mock, upstream_for};
use ferry::config::{LaneConfig, Mode, ProviderKind};
use ferry::core::combine;
use ferry::http::Keys;
use serde_json::json;

const KEY_A: &str = "tenant-a-key-0123456789";
const KEY_B: &str = "tenant-b-key-0123456789";

#[actix_rt::test]
async fn a_combined_call_carries_one_owners_prompts_with_one_set_of_parameters() {
    let mock = start_mock(mock_args());
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = http_config(&dir);
    let mut upstream = upstream_for(ProviderKind::Openai, &mock);
    upstream.models = vec!["m".into()];
    config.upstreams = vec![upstream];
    // One combined lane that waits 300 ms for up to 16 prompts, so both keys' prompts meet in it.
    config.lanes.insert(
        "high".into(),
        LaneConfig {
            window_ms: 300,
            max_batch: Some(16),
            mode: Mode::Combined,
            ..config.lanes["high"].clone()
        },
    );
    let server = TestServer::start_with(config, Keys::new(&[KEY_A, KEY_B], &[]), dir);

    let send = |key: &'static str, who: &'static str, n: usize, temperature: f64, max_tokens: u32| {
        let url = server.url("/v1/chat/completions");
        async move {
            let mut body = json!({"model": "m", "temperature": temperature, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": format!("{who}-{n}")}]});
            if who.ends_with("stop") {
                body["stop"] = json!(["\n"]);
            }
            let response =
                client().post(url).bearer_auth(key).header("x-ferry-priority", "high").json(&body).send();
            let (status, reply) = json_of(response.await.expect("chat")).await;
            assert_eq!(status, 200, "{reply}");
        }
    };
    let mut all = Vec::new();
    for n in 0..6 {
        all.push(actix_rt::spawn(send(KEY_A, "a", n, 0.2, 10)));
        all.push(actix_rt::spawn(send(KEY_B, "b", n, 0.9, 30)));
    }
    // One more from A at another temperature: it may not share a call with A's others. And two
    // with a stop sequence, which would cut a combined reply: each goes alone.
    all.push(actix_rt::spawn(send(KEY_A, "a-hot", 0, 1.3, 10)));
    all.push(actix_rt::spawn(send(KEY_A, "a-stop", 0, 0.2, 10)));
    all.push(actix_rt::spawn(send(KEY_A, "a-stop", 1, 0.2, 10)));
    for task in all {
        task.await.expect("sender ran");
    }

    let calls = mock.recent_calls();
    let mut prompts_seen = 0;
    let mut combined_calls = 0;
    for call in &calls {
        let prompts: Vec<String> = combine::parse_request(&call.messages)
            .map(|packed| packed.into_iter().map(|(_, text)| text).collect())
            .unwrap_or_else(|| vec![call.messages.last().map(|m| m.content.clone()).unwrap_or_default()]);
        prompts_seen += prompts.len();
        combined_calls += usize::from(prompts.len() > 1);
        let owner = |p: &String| p.split('-').next().map(str::to_string);
        assert!(
            prompts.iter().all(|p| owner(p) == owner(&prompts[0])),
            "two owners in one call: {prompts:?}"
        );
        if prompts[0].starts_with("a-stop") {
            assert_eq!((prompts.len(), call.stop.clone()), (1, vec!["\n".to_string()]), "{prompts:?}");
            assert!(call.response_format.is_none(), "a call alone: {prompts:?}");
        } else {
            assert!(call.stop.is_empty(), "{prompts:?}");
        }
        let (temperature, per_item) = match prompts[0].as_str() {
            p if p.starts_with("a-hot") => (1.3, 10),
            p if p.starts_with('a') => (0.2, 10),
            _ => (0.9, 30),
        };
        assert!(
            prompts.iter().all(|p| p.starts_with("a-hot") == prompts[0].starts_with("a-hot")),
            "{prompts:?}"
        );
        assert_eq!(call.temperature, Some(temperature), "{prompts:?}");
        assert_eq!(
            call.max_tokens,
            Some(per_item * prompts.len() as u32),
            "the budget is the items' own: {prompts:?}"
        );
    }
    assert_eq!(prompts_seen, 15, "every prompt reached the upstream once: {calls:?}");
    assert!(combined_calls >= 2, "the lane combined each owner's prompts: {} calls", calls.len());
    server.stop().await;
}
