//! The console's panes drawn with ratatui's TestBackend at 80×24 and 200×60, from a fixed
//! sequence of metrics messages in their wire form (the `GET /api/v1/events` stream a remote
//! console reads), with explicit assertions on the cells of each pane.

use std::time::{Duration, Instant, SystemTime};

use ferry::console::layout::{Areas, areas};
use ferry::console::remote::parse_message;
use ferry::console::state::{Drain, Field, Focus, Mode};
use ferry::console::view::ConfigView;
use ferry::console::{Dashboard, Update, draw};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

/// 2026-11-25 12:00:00 UTC.
const WALL: u64 = 1_795_608_000;

fn config() -> ConfigView {
    let lane = |rank, window, max, delay, mode, follows| {
        serde_json::json!({"rank": rank, "window_ms": window, "max_batch": max, "delay_ms": delay, "mode": mode,
            "max_batch_follows_global": follows, "delay_follows_global": true})
    };
    serde_json::from_value(serde_json::json!({
        "batch_size": 10, "batch_delay_ms": 100, "paused": false,
        "lanes": {
            "high": lane(3, 200, 6, 100, "combined", false),
            "medium": lane(2, 1000, 4, 100, "combined", false),
            "low": lane(1, 4000, 4, 100, "combined", false),
            "bulk": lane(0, 0, 10, 100, "fanout", true),
        },
        "upstreams": []
    }))
    .expect("config JSON")
}

fn batch(id: &str, lane: &str, size: usize, failed: usize, ms: f64) -> String {
    format!(
        r#"data: {{"type":"batch_completed","id":"{id}","lane":"{lane}","mode":"combined","size":{size},"ok":{},"failed":{failed},"requeued":0,"duration":{ms},"finished_at":{{"secs_since_epoch":{WALL},"nanos_since_epoch":0}}}}"#,
        size - failed
    )
}

fn upstream(state: &str, rate_limited: u64, error: Option<&str>) -> String {
    let error = error.map_or("null".to_string(), |e| format!("\"{e}\""));
    format!(
        r#"data: {{"type":"upstream","name":"mock","state":{state},"in_flight":3,"queued":0,"concurrency":16,"limits":{{"rpm_used":120,"rpm_limit":500,"tpm_used":4200,"tpm_limit":200000,"rpd_used":120,"rpd_limit":null}},"calls":130,"ok":120,"failed":4,"retries":6,"duplicate_risk":0,"rate_limited":{rate_limited},"backpressure":0,"prompt_tokens":3000,"completion_tokens":1200,"limit_waits":0,"last_error":{error}}}"#
    )
}

/// The fixed sequence: depths over a few seconds, four batches (one with failures), an upstream
/// that got a 429 and is backing off, a restart, a config change and two log lines.
fn dashboard() -> Dashboard {
    let start = Instant::now();
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(WALL);
    let mut state = Dashboard::new("local · API http://127.0.0.1:8000", start, wall);
    state.set_config(config());
    let feed = |state: &mut Dashboard, message: String| match parse_message(&message) {
        Some(Update::Metrics(event)) => {
            state.apply(event);
        }
        other => panic!("{message} parsed as {other:?}"),
    };
    for (second, depth) in [3u64, 9, 14, 7].into_iter().enumerate() {
        let at = Duration::from_secs(second as u64);
        state.tick(start + at, wall + at);
        feed(
            &mut state,
            format!(
                r#"data: {{"type":"lane_depth","lane":"high","depth":{depth},"oldest_ms":1200,"owners":2,"top_owners":[{{"owner":"a","depth":{}}},{{"owner":"b","depth":1}}]}}"#,
                depth - 1
            ),
        );
        feed(
            &mut state,
            format!(
                r#"data: {{"type":"lane_depth","lane":"bulk","depth":{},"oldest_ms":300,"owners":1,"top_owners":[{{"owner":"local","depth":{}}}]}}"#,
                depth * 10,
                depth * 10
            ),
        );
    }
    let at = Duration::from_secs(4);
    state.tick(start + at, wall + at);
    feed(&mut state, upstream(r#"{"state":"ok"}"#, 0, None));
    for (id, lane, size, failed, ms) in [
        ("01KAWQ0000000000000000B001", "high", 6, 0, 12.5),
        ("01KAWQ0000000000000000B002", "medium", 4, 0, 40.0),
        ("01KAWQ0000000000000000B003", "bulk", 10, 2, 812.0),
        ("01KAWQ0000000000000000B004", "high", 6, 0, 9.0),
    ] {
        feed(
            &mut state,
            format!(
                r#"data: {{"type":"batch_dispatched","id":"{id}","lane":"{lane}","size":{size},"mode":"combined"}}"#
            ),
        );
        feed(&mut state, batch(id, lane, size, failed, ms));
    }
    feed(&mut state, upstream(r#"{"state":"backing_off","for_ms":5000}"#, 1, Some("HTTP 429: slow down")));
    feed(&mut state, r#"data: {"type":"actor_restarted","actor":"lane:bulk"}"#.to_string());
    feed(&mut state, r#"data: {"type":"config_changed","change":"batch_size=10"}"#.to_string());
    state.push_log(false, "event=batch_complete lane=high size=6".into());
    state.push_log(true, "event=retry upstream=mock attempt=2".into());
    state
}

fn render(state: &Dashboard, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    terminal.draw(|frame| draw(frame, state)).expect("draw");
    terminal.backend().buffer().clone()
}

/// The text inside `rect`, one line per row.
fn text_in(buffer: &Buffer, rect: Rect) -> String {
    let mut text = String::new();
    for y in rect.top()..rect.bottom() {
        for x in rect.left()..rect.right() {
            text.push_str(buffer.cell((x, y)).map_or(" ", |c| c.symbol()));
        }
        text.push('\n');
    }
    text
}

fn panes(state: &Dashboard, width: u16, height: u16) -> (Buffer, Areas) {
    let buffer = render(state, width, height);
    let areas = areas(Rect::new(0, 0, width, height), 4, 1).expect("big enough");
    (buffer, areas)
}

/// The rows of `text` with their trailing blanks cut.
fn rows(text: &str) -> Vec<&str> {
    text.lines().map(str::trim_end).collect()
}

/// A row's words, one space apart: the whole row, without its column padding.
fn words(row: &str) -> String {
    row.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn assert_has(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
}

const SIZES: [(u16, u16); 2] = [(80, 24), (200, 60)];

#[test]
fn header_shows_batching_state_and_totals() {
    let (buffer, a) = panes(&dashboard(), 80, 24);
    assert_eq!(
        rows(&text_in(&buffer, a.header)),
        [" ferry  local 127.0.0.1:8000 │ size 10 │ delay 100ms │ running │ ok 24 failed 2"]
    );
    let (buffer, a) = panes(&dashboard(), 200, 60);
    assert_eq!(
        rows(&text_in(&buffer, a.header)),
        [" ferry  local · API http://127.0.0.1:8000 │ batch size 10 │ delay 100 ms │ running │ \
          ok 24 · failed 2 · batches 4 │ restarts 1"]
    );
}

#[test]
fn lanes_pane_at_80x24_and_200x60() {
    for (w, h) in SIZES {
        let (buffer, a) = panes(&dashboard(), w, h);
        let text = text_in(&buffer, a.lanes);
        assert_has(&text, &["Lanes", "window", "max", "delay", "oldest", "▶ high", "medium", "low", "bulk"]);
        let rows = rows(&text);
        // Order by rank; high selected; depth 7 with its queue bar and its history (3, 9, 14, 7)
        // as a sparkline; its settings; the oldest item's wait (reported 1.2 s at second 3,
        // drawn at second 4). Bulk follows [batching]: max 10.
        // From 100 columns, the owners: high holds two, the deeper with 6 of 7; bulk one.
        let (queue, owners) = if w >= 200 {
            ("█████████████████", [" owners", " 2 · 85%", " -", " -", " 1"])
        } else {
            ("███", [""; 5])
        };
        let expected = [
            format!("lane depth queue depth, last minutes window max delay oldest{}", owners[0]),
            format!("▶ high 7 {queue} ▁▅██ 200 ms 6 100 ms 2.2 s{}", owners[1]),
            format!("medium 0 1000 ms 4 100 ms -{}", owners[2]),
            format!("low 0 4000 ms 4 100 ms -{}", owners[3]),
            format!("bulk 70 {queue} ▁▅██ 0 ms 10 100 ms 1.3 s{}", owners[4]),
        ];
        let shown: Vec<String> = rows[1..6].iter().map(|row| words(row.trim_matches('│'))).collect();
        assert_eq!(shown, expected, "{text}");
    }
    // At 80 columns, the columns line up exactly.
    let (buffer, a) = panes(&dashboard(), 80, 24);
    assert_eq!(
        rows(&text_in(&buffer, a.lanes))[1..6],
        [
            "│  lane      depth queue  depth, last minutes     window  max   delay   oldest │",
            "│▶ high         7  ███    ▁▅██                    200 ms     6  100 ms    2.2 s│",
            "│  medium       0                                1000 ms     4  100 ms        -│",
            "│  low          0                                4000 ms     4  100 ms        -│",
            "│  bulk        70  ███    ▁▅██                      0 ms    10  100 ms    1.3 s│",
        ]
    );
}

#[test]
fn batches_pane_at_80x24_and_200x60() {
    for (w, h) in SIZES {
        let (buffer, a) = panes(&dashboard(), w, h);
        let text = text_in(&buffer, a.batches);
        assert_has(
            &text,
            &["Batches", "p50", "p95 812 ms", "items/s", "tokens/s", "id", "lane", "mode", "failed"],
        );
        // Newest first: B004 (high, 9 ms) on the first row under the header; at 60 rows all four.
        let rows: Vec<String> = rows(&text).iter().map(|row| words(row.trim_matches('│'))).collect();
        let mut expected = vec![
            "p50 12 ms · p95 812 ms · 2.6 items/s · 0.0 tokens/s · in flight 0",
            "id lane size mode time ok failed",
            "00B004 high 6 combined 9.0 ms 6 0",
        ];
        if h >= 60 {
            expected.extend([
                "00B003 bulk 10 combined 812 ms 8 2",
                "00B002 medium 4 combined 40 ms 4 0",
                "00B001 high 6 combined 12 ms 6 0",
            ]);
        }
        assert_eq!(rows[1..=expected.len()], expected, "{text}");
    }
}

#[test]
fn upstreams_pane_at_80x24_and_200x60() {
    for (w, h) in SIZES {
        let (buffer, a) = panes(&dashboard(), w, h);
        let text = text_in(&buffer, a.upstreams);
        assert_has(&text, &["Upstreams", "mock", "3/16", "120/500", "4200/200000", "HTTP 429: slow down"]);
        if w >= 200 {
            assert_has(&text, &["backing off until 12:00:09 (5.0 s left)", "429s", "retries"]);
        } else {
            assert_has(&text, &["backoff 5.0 s"]);
        }
    }
}

#[test]
fn failures_and_log_panes_at_80x24_and_200x60() {
    for (w, h) in SIZES {
        let (buffer, a) = panes(&dashboard(), w, h);
        let failures = text_in(&buffer, a.failures);
        assert_has(&failures, &["Failures (4)", "12:00:"]);
        let log = text_in(&buffer, a.log);
        assert_has(&log, &["Log (3)", "event=retry"]);
        if h >= 60 {
            assert_has(&failures, &["00B003 (bulk): 2 of 10", "429", "lane:bulk"]);
            assert_has(&log, &["event=config_changed change=batch_size=10", "event=batch_complete"]);
        } else {
            // The newest lines show first when space is short.
            assert_has(&failures, &["lane:bulk"]);
        }
    }
}

#[test]
fn scrolled_log_shows_older_lines_and_says_so() {
    let mut state = dashboard();
    for i in 0..30 {
        state.push_log(false, format!("event=filler n={i}"));
    }
    state.focus = Focus::Log;
    state.log_scroll = 30;
    let (buffer, a) = panes(&state, 200, 60);
    let log = text_in(&buffer, a.log);
    assert_has(&log, &["↑30", "event=config_changed"]);
    assert!(!log.contains("n=29"), "{log}");
}

#[test]
fn footer_shows_the_value_being_typed_and_help_lists_every_key() {
    let mut state = dashboard();
    state.mode = Mode::Input { field: Field::BatchSize, buffer: "25".into() };
    let (buffer, a) = panes(&state, 80, 24);
    assert_has(&text_in(&buffer, a.footer), &["new batch size: 25"]);
    state.mode = Mode::Help;
    for (w, h) in SIZES {
        let text = text_in(&render(&state, w, h), Rect::new(0, 0, w, h));
        assert_has(
            &text,
            &["Keys", "+ / -", "batch size up / down", "p, space", "pause / resume", "q, Ctrl-C", "quit"],
        );
    }
}

/// After `q`: the footer counts what the drain still has to answer (queued in the lanes, in
/// flight at the upstreams) and offers the second `q`; once pressed, it says it is cutting off.
#[test]
fn footer_counts_what_the_drain_still_answers_and_offers_a_second_q() {
    let mut state = dashboard();
    // The first half second: a `q` held down is not a second one, so no offer yet.
    state.drain = Some(Drain::Starting);
    let (buffer, a) = panes(&state, 80, 24);
    let footer = text_in(&buffer, a.footer);
    assert_has(&footer, &["quitting: answering 77 queued and 3 in flight"]);
    assert!(!footer.contains("q again"), "{footer}");
    state.drain = Some(Drain::Waiting);
    for (w, h) in SIZES {
        let (buffer, a) = panes(&state, w, h);
        // 7 waiting in high, 70 in bulk; 3 in flight at the mock.
        assert_has(
            &text_in(&buffer, a.footer),
            &["quitting: answering 77 queued and 3 in flight", "q again"],
        );
    }
    state.drain = Some(Drain::CuttingOff);
    let (buffer, a) = panes(&state, 80, 24);
    let footer = text_in(&buffer, a.footer);
    assert_has(&footer, &["stopping now: cutting off what is left"]);
    assert!(!footer.contains("q again"), "{footer}");
}

#[test]
fn every_size_down_to_tiny_draws_without_panic() {
    let state = dashboard();
    for (w, h) in [
        (80, 24),
        (200, 60),
        (81, 25),
        (119, 30),
        (120, 30),
        (139, 40),
        (140, 40),
        (40, 12),
        (39, 11),
        (10, 3),
        (1, 1),
        (300, 90),
    ] {
        let text = text_in(&render(&state, w, h), Rect::new(0, 0, w, h));
        if w < 40 || h < 12 {
            assert!(text.contains("small") || w < 20, "{w}x{h}:\n{text}");
        } else if w >= 80 && h >= 24 {
            assert_has(&text, &["Lanes", "Batches", "Upstreams", "Failures", "Log"]);
        }
    }
}

#[test]
fn header_names_a_failed_actor_first() {
    let mut state = dashboard();
    let message = r#"data: {"type":"actor_failed","actor":"pool"}"#;
    match parse_message(message) {
        Some(Update::Metrics(event)) => {
            state.apply(event);
        }
        other => panic!("{message} parsed as {other:?}"),
    }
    let (buffer, a) = panes(&state, 80, 24);
    assert_eq!(
        rows(&text_in(&buffer, a.header)),
        [" ferry  local 127.0.0.1:8000 │ FAILED: pool (no new work) │ size 10 │ delay 100m"]
    );
    let failures = text_in(&buffer, a.failures);
    let rows = rows(&failures);
    assert_eq!(rows[rows.len() - 2], "│12:00:04 actor pool kept panicking│", "{failures}");
}
