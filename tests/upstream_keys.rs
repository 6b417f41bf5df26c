//! An upstream's API key can be replaced live, and the new key is used from the next call on.

mod common;

use common::{LANE, engine_config, fast_upstream, mock_args, quick_lane, start_mock};
use ferry::config::Mode;
use ferry::engine::{Engine, ItemError, Prompt};
use ferry::mock_upstream::MockUpstreamArgs;
use ferry::providers::ProviderError;

#[actix_rt::test]
async fn a_key_set_live_is_used_from_the_next_call() {
    let mock = start_mock(MockUpstreamArgs { api_key: Some("sk-right-key".into()), ..mock_args() });
    let upstream = fast_upstream("keyed", &mock.base_url());
    let engine =
        Engine::start(&engine_config(quick_lane(Mode::Fanout, 10), vec![upstream])).expect("engine starts");

    let refused = engine.submit_one(LANE, Prompt::text("without a key")).await.expect("accepted");
    match refused {
        Err(ItemError::Upstream {
            error: ProviderError::Rejected { status: 401, .. }, attempts: 1, ..
        }) => {}
        other => panic!("expected a 401 without a key, got {other:?}"),
    }

    engine.set_upstream_key(None, "sk-wrong-key".into()).await.expect("key set");
    let wrong = engine.submit_one(LANE, Prompt::text("with the wrong key")).await.expect("accepted");
    assert!(wrong.is_err(), "the wrong key must be refused: {wrong:?}");

    engine.set_upstream_key(Some("keyed"), "sk-right-key".into()).await.expect("key set");
    let answer = engine.submit_one(LANE, Prompt::text("with the right key")).await.expect("accepted");
    let answer = answer.expect("the right key is accepted");
    assert!(answer.text.contains("with the right key"), "{}", answer.text);

    let unknown = engine.set_upstream_key(Some("nope"), "k".into()).await;
    assert!(unknown.is_err(), "an unknown upstream is refused");
}
