//! The console's controls: key events drive the same engine calls as the HTTP config endpoints,
//! in process and attached to a daemon over HTTP; the daemon's event stream carries the metrics
//! messages and its lane and pause endpoints take the console's changes.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{ADMIN_KEY, INFERENCE_KEY, TestServer, call};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ferry::console::app::{Calls, apply, start};
use ferry::console::input::handle_key;
use ferry::console::remote::RemoteClient;
use ferry::console::state::Link;
use ferry::console::{Command, Controller, Dashboard, Update};
use ferry::engine::{MetricsEvent, Prompt, RuntimeConfig};
use ferry::http::Keys;
use serde_json::json;
use tokio::sync::mpsc;

/// A dashboard driven by `controller`, as the console loop drives it (without a terminal).
struct Driver {
    state: Dashboard,
    controller: Controller,
    tx: mpsc::Sender<Update>,
    rx: mpsc::Receiver<Update>,
    calls: Calls,
}

impl Driver {
    async fn new(controller: Controller) -> Driver {
        let (tx, rx) = mpsc::channel(1024);
        let mut state = Dashboard::new("test", Instant::now(), SystemTime::now());
        state.set_config(controller.config().await.expect("config"));
        Driver::with(state, controller, tx, rx)
    }

    fn with(
        state: Dashboard,
        controller: Controller,
        tx: mpsc::Sender<Update>,
        rx: mpsc::Receiver<Update>,
    ) -> Driver {
        let calls = Calls::start(controller.clone(), tx.clone());
        Driver { state, controller, tx, rx, calls }
    }

    /// Presses `keys`; each command is started as the console starts it and its result waited for.
    async fn press(&mut self, keys: &str) {
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '↓' => KeyCode::Down,
                '↑' => KeyCode::Up,
                c => KeyCode::Char(c),
            };
            self.key(KeyEvent::new(code, KeyModifiers::NONE)).await;
        }
    }

    async fn key(&mut self, key: KeyEvent) -> Option<Command> {
        let command = handle_key(&mut self.state, key)?;
        if !start(&mut self.state, command.clone(), &self.calls) {
            return Some(command);
        }
        if self.state.status.as_ref().is_some_and(|(_, failed)| *failed) {
            return Some(command);
        }
        // Wait for this command's result, folding in whatever else arrives.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let update = tokio::time::timeout_at(deadline, self.rx.recv()).await.expect("a result in time");
            let Some(update) = update else { panic!("channel closed") };
            let done = matches!(update, Update::Done(_));
            apply(&mut self.state, update, &self.controller, &self.tx);
            if done {
                return Some(command);
            }
        }
    }

    fn status(&self) -> String {
        self.state.status.clone().map(|(s, _)| s).unwrap_or_default()
    }
}

/// The keys every control test presses, and what the engine must say afterwards.
const KEYS: &str = "+++b25\n]d50\n↓>w300\np";

fn assert_after_keys(config: &RuntimeConfig) {
    assert_eq!(config.batch_size, 25, "+++ then b25⏎");
    assert_eq!(config.batch_delay_ms, 50, "] then d50⏎");
    let medium = &config.lanes["medium"];
    assert_eq!((medium.max_batch, medium.window_ms), (5, 300), "↓ selects medium; > and w300⏎");
    assert_eq!(config.lanes["bulk"].max_batch, 25, "bulk follows [batching] batch_size");
    assert_eq!(config.lanes["high"].max_batch, 6, "high keeps its own");
    assert!(config.paused, "p pauses");
}

#[actix_rt::test]
async fn keys_change_the_engine_like_the_http_endpoints() {
    let server = TestServer::start(Keys::none());
    let mut driver = Driver::new(Controller::Local(server.engine.clone())).await;
    driver.press("+").await;
    assert_eq!(server.engine.config().await.expect("config").batch_size, 11);
    driver.press(KEYS).await;
    assert_after_keys(&server.engine.config().await.expect("config"));
    // What the HTTP API reports is the same.
    let (status, body) = call(&server.base, "GET", "/api/v1/config", None, None).await;
    assert_eq!((status, body["batch_size"].as_u64(), body["paused"].as_bool()), (200, Some(25), Some(true)));
    // The dashboard shows what the engine has.
    assert_eq!(driver.state.config.as_ref().map(|c| c.batch_size), Some(25));
    driver.press("p").await;
    assert!(!server.engine.config().await.expect("config").paused, "p again resumes");
    // A typed value the HTTP API would refuse is refused, not changed into another value; a
    // step stays in range.
    driver.press("b0\n").await;
    let refused = driver.state.status.clone().map(|(text, failed)| (failed, text.contains("1..=10000")));
    assert_eq!(refused, Some((true, true)), "{:?}", driver.state.status);
    assert_eq!(server.engine.config().await.expect("config").batch_size, 25);
    driver.press("b1\n").await;
    driver.press("-").await;
    assert_eq!(server.engine.config().await.expect("config").batch_size, 1);
    server.stop().await;
}

#[actix_rt::test]
async fn burst_and_quit_keys() {
    let server = TestServer::start(Keys::none());
    let mut events = server.engine.subscribe();
    let mut driver = Driver::new(Controller::Local(server.engine.clone())).await;
    driver.press("s").await;
    assert!(driver.status().contains("submitted 200 demo prompts"), "{}", driver.status());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut answered = 0;
    while answered < 200 {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(MetricsEvent::BatchCompleted(b))) => answered += b.ok + b.failed,
            Ok(_) => {}
            Err(_) => panic!("only {answered} of 200 demo prompts answered"),
        }
    }
    let quit = driver.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)).await;
    assert_eq!(quit, Some(Command::Quit));
    assert_eq!(driver.key(KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE)).await, Some(Command::Quit));
    server.stop().await;
}

#[actix_rt::test]
async fn remote_keys_change_the_daemon_over_http() {
    let server = TestServer::start(Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]));
    let remote = RemoteClient::new(&server.base, Some(ADMIN_KEY.into())).expect("client");
    let mut driver = Driver::new(Controller::Remote(remote)).await;
    driver.press(KEYS).await;
    assert_after_keys(&server.engine.config().await.expect("config"));

    // An inference key may watch but not steer: the refusal shows in the status line.
    let remote = RemoteClient::new(&server.base, Some(INFERENCE_KEY.into())).expect("client");
    let controller = Controller::Remote(remote);
    assert!(controller.config().await.is_err(), "config is admin-only");
    let (tx, rx) = mpsc::channel(1024);
    let mut driver = Driver::with(driver.state.clone(), controller, tx, rx);
    driver.press("+").await;
    assert!(driver.status().contains("403"), "{}", driver.status());
    // The refused change does not stay on screen: the console showed 26 at once, and the refusal
    // put back what the daemon has (sent before the result `press` waited for).
    assert_eq!(driver.state.config.as_ref().map(|c| c.batch_size), Some(25));
    assert_eq!(server.engine.config().await.expect("config").batch_size, 25);
    server.stop().await;
}

/// Keys pressed faster than the engine answers reach it in the order pressed: twenty `+` in a
/// row end at batch size 30, not at whichever request happened to arrive last.
#[actix_rt::test]
async fn keys_pressed_in_a_burst_arrive_in_order() {
    let server = TestServer::start(Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]));
    let remote = RemoteClient::new(&server.base, Some(ADMIN_KEY.into())).expect("client");
    burst_of_plus(&server, Controller::Remote(remote), 30).await;
    burst_of_plus(&server, Controller::Local(server.engine.clone()), 50).await;
    server.stop().await;
}

/// Twenty `+` without waiting; the engine's batch size must be `expected` afterwards.
async fn burst_of_plus(server: &TestServer, controller: Controller, expected: usize) {
    let mut driver = Driver::new(controller).await;
    for _ in 0..20 {
        let command = handle_key(&mut driver.state, KeyEvent::new(KeyCode::Char('+'), KeyModifiers::NONE));
        assert!(start(&mut driver.state, command.expect("+ is a command"), &driver.calls));
    }
    let mut done = 0;
    while done < 20 {
        match next(&mut driver.rx).await {
            Update::Done(result) => {
                assert!(result.is_ok(), "{result:?}");
                done += 1;
            }
            update => {
                apply(&mut driver.state, update, &driver.controller, &driver.tx);
            }
        }
    }
    assert_eq!(server.engine.config().await.expect("config").batch_size, expected);
}

/// The next update, failing the test after ten seconds.
async fn next(rx: &mut mpsc::Receiver<Update>) -> Update {
    let wait = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
    wait.expect("an update in time").expect("channel open")
}

#[actix_rt::test]
async fn event_stream_feeds_a_remote_console() {
    let server = TestServer::start(Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]));
    let (tx, mut rx) = mpsc::channel(4096);
    let follow =
        actix_rt::spawn(RemoteClient::new(&server.base, Some(ADMIN_KEY.into())).expect("client").follow(tx));
    assert!(matches!(next(&mut rx).await, Update::Link(Link::Up)));
    assert!(matches!(next(&mut rx).await, Update::Config(c) if c.batch_size == 10));
    assert!(matches!(next(&mut rx).await, Update::Snapshot(_)));
    let outcome = server.engine.submit_one("high", Prompt::text("hello")).await.expect("submitted");
    assert!(outcome.is_ok());
    server.engine.set_batch_size(12).await.expect("set");
    let (mut completed, mut changed) = (false, false);
    while !(completed && changed) {
        match next(&mut rx).await {
            Update::Metrics(MetricsEvent::BatchCompleted(b)) => {
                completed |= b.lane.as_ref() == "high" && b.ok == 1
            }
            Update::Metrics(MetricsEvent::ConfigChanged { change }) => changed |= change == "batch_size=12",
            _ => {}
        }
    }
    follow.abort();

    // Without a key: refused, and the console says it is not attached.
    let (tx, mut rx) = mpsc::channel(16);
    let follow = actix_rt::spawn(RemoteClient::new(&server.base, None).expect("client").follow(tx));
    match next(&mut rx).await {
        Update::Link(Link::Down(why)) => assert!(why.contains("401"), "{why}"),
        other => panic!("{other:?}"),
    }
    follow.abort();
    server.stop().await;
}

#[actix_rt::test]
async fn lane_and_pause_endpoints_are_admin_config_calls() {
    let server = TestServer::start(Keys::new(&[INFERENCE_KEY], &[ADMIN_KEY]));
    let base = &server.base;
    let key = Some(ADMIN_KEY);
    let (status, body) = call(
        base,
        "POST",
        "/api/v1/config/lanes/medium",
        key,
        Some(json!({"max_batch": 7, "window_ms": 50})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["lanes"]["medium"]["max_batch"].as_u64(), body["lanes"]["medium"]["window_ms"].as_u64()),
        (Some(7), Some(50))
    );
    let lanes = server.engine.config().await.expect("config").lanes;
    assert_eq!((lanes["medium"].max_batch, lanes["medium"].window_ms), (7, 50));

    for (path, body, param) in [
        ("/api/v1/config/lanes/nope", json!({"max_batch": 2}), "lane"),
        ("/api/v1/config/lanes/high", json!({"max_batch": 0}), "max_batch"),
        ("/api/v1/config/lanes/high", json!({"mode": "fanout"}), "mode"),
        ("/api/v1/config/lanes/high", json!({}), "body"),
    ] {
        let (status, reply) = call(base, "POST", path, key, Some(body.clone())).await;
        assert_eq!((status, reply["error"]["param"].as_str()), (400, Some(param)), "{path} {body}: {reply}");
    }

    let (status, _) = call(base, "POST", "/api/v1/config/pause", Some(INFERENCE_KEY), None).await;
    assert_eq!(status, 403, "an inference key may not pause");
    let (status, body) = call(base, "POST", "/api/v1/config/pause", key, None).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(true)));
    assert!(server.engine.config().await.expect("config").paused);
    let (status, body) = call(base, "POST", "/api/v1/config/resume", key, None).await;
    assert_eq!((status, body["paused"].as_bool()), (200, Some(false)));
    let (status, _) = call(base, "GET", "/api/v1/events", None, None).await;
    assert_eq!(status, 401, "the event stream needs a key");
    server.stop().await;
}
