//! Chat retention: by age and by count, pruned in small slices, under an injected "now" (the
//! cutoff is passed in, as the background task computes it from the clock).

use ferry::store::{ChatQuery, NewChat, Retention, Store};
use serde_json::json;

const DAY_MS: i64 = 86_400_000;
/// 2026-01-27T00:00:00Z.
const JAN_27: i64 = 1_769_472_000_000;

fn chat(day: i64, n: usize) -> NewChat {
    NewChat {
        owner: None,
        username: None,
        request_id: Some(format!("r{n}")),
        lane: "medium".into(),
        priority: None,
        batch_id: Some(format!("b{n}")),
        request: json!({"prompt": format!("question {n}")}),
        response: json!({"text": format!("answer {n}")}),
        ok: true,
        created_at: JAN_27 + day * DAY_MS - 10,
        completed_at: JAN_27 + day * DAY_MS,
        tokens_used: 1,
        latency_ms: 10.0,
    }
}

async fn remaining(store: &Store) -> Vec<String> {
    let all = ChatQuery { owner: None, username: None, limit: 1000, before: None };
    let chats = store.chats(all).await.expect("list");
    chats.iter().map(|c| c.request_id.clone().unwrap_or_default()).collect()
}

#[actix_rt::test]
async fn chats_past_their_age_or_count_are_pruned_in_slices() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("ferry.db")).expect("store opens");
    // 30 chats, one a day from Jan 27.
    store.record_chats((0..30).map(|day| chat(day, day as usize)).collect()).await.expect("record");

    let counted = store.analytics(None).await.expect("analytics");
    assert_eq!(counted.total_requests, 30);

    // "Now" is day 30; keep 10 days: days 0..=19 go, in slices of 4.
    let now = JAN_27 + 30 * DAY_MS;
    let by_age = Retention { before_ms: Some(now - 10 * DAY_MS), keep_newest: None };
    assert_eq!(store.prune_chats(by_age, 4).await.expect("prune"), 20);
    let left = remaining(&store).await;
    assert_eq!(left.len(), 10);
    assert_eq!(left.first().map(String::as_str), Some("r29"));
    assert_eq!(left.last().map(String::as_str), Some("r20"));
    // Nothing more to do the second time.
    assert_eq!(store.prune_chats(by_age, 4).await.expect("prune"), 0);

    // Keep only the newest 3.
    let by_count = Retention { before_ms: None, keep_newest: Some(3) };
    assert_eq!(store.prune_chats(by_count, 2).await.expect("prune"), 7);
    assert_eq!(remaining(&store).await, ["r29", "r28", "r27"]);
    // The analytics outlive the chats: counts stay, texts go.
    assert_eq!(store.analytics(None).await.expect("analytics"), counted);
}
