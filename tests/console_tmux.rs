//! The console in a real terminal: `ferry console` with the shipped config.toml (the built-in
//! mock) runs in a tmux pane; keys raise the batch size, the pane shows it and
//! `GET /api/v1/config` reports it; `q` quits with exit 0 and the terminal back in cooked mode
//! on the main screen.
//!
//! Runs when tmux is installed (`.ci/run` installs it and sets `FERRY_TMUX_REQUIRED=1`, which
//! turns a missing tmux into a failure); skips loudly otherwise. Each test runs its own tmux
//! server (`tmux -L <unique>`), its own port and its own temp dir.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{call, wait_for_log_bind};

/// A tmux server of this test's own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs")
    }

    fn capture(&self) -> String {
        // With some history, so lines scrolled off after ferry exits still count.
        let out = self.run(&["capture-pane", "-p", "-S", "-50", "-t", "console"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        assert!(self.run(&args).status.success(), "send-keys {keys:?}");
    }

    /// Waits until the pane shows `text`; fails with the pane's content after `limit`.
    async fn wait_for(&self, text: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let pane = self.capture();
            if pane.contains(text) {
                return pane;
            }
            assert!(Instant::now() < deadline, "the pane never showed {text:?}; it shows:\n{pane}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn tmux_installed() -> bool {
    Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success())
}

/// The shipped config.toml with the API on a free port and logs and data in `dir`.
fn shipped_config_in(dir: &Path, mock_latency_ms: u64) -> std::path::PathBuf {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml")).expect("config.toml");
    let text = shipped
        .replace(
            "latency_ms = 0\nlatency_jitter_ms",
            &format!("latency_ms = {mock_latency_ms}\nlatency_jitter_ms"),
        )
        .replace("bind = \"127.0.0.1:8000\"", "bind = \"127.0.0.1:0\"")
        .replace("path = \"data/ferry.db\"", &format!("path = {:?}", dir.join("data/ferry.db")))
        .replace("dir = \"logs\"", &format!("dir = {:?}", dir.join("logs")));
    for line in
        ["bind = \"127.0.0.1:0\"", "ferry.db\"", "/logs\"", &format!("latency_ms = {mock_latency_ms}\n")]
    {
        assert!(text.contains(line), "config.toml no longer has the line this test rewrites to {line}");
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// How to start the console.
#[derive(Default)]
struct Setup<'a> {
    /// Environment assignments put before the command.
    env: &'a str,
    /// The mock's latency per call.
    mock_latency_ms: u64,
    /// Whether ferry's standard error goes to `stderr.txt` in the temp dir instead of the pane
    /// (the dashboard is drawn on standard output).
    stderr_to_file: bool,
}

/// `ferry console` with the shipped config in a tmux pane of its own, `env` set for it. After
/// ferry exits, the pane's shell prints whether the terminal is back in cooked mode (`icanon
/// echo`; raw mode shows `-icanon -echo`) and then its exit status — in that order, so the
/// terminal's line is there once the exit status shows.
struct Console {
    tmux: Tmux,
    dir: tempfile::TempDir,
}

impl Console {
    /// None (after a loud note) when tmux is not installed and not required.
    fn start(env: &str) -> Option<Console> {
        Console::start_with(Setup { env, ..Setup::default() })
    }

    /// [`Console::start`] as `setup` says.
    fn start_with(setup: Setup) -> Option<Console> {
        let Setup { env, mock_latency_ms, stderr_to_file } = setup;
        if !tmux_installed() {
            common::skip::skip(
                "console real-terminal test: tmux is not installed",
                "install tmux to run it (.ci/run installs it)",
                "FERRY_TMUX_REQUIRED",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let config = shipped_config_in(dir.path(), mock_latency_ms);
        let name = dir.path().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmux = Tmux { socket: format!("ferry-test-{}-{name}", std::process::id()) };
        let stderr = if stderr_to_file {
            format!("2>{}", dir.path().join("stderr.txt").display())
        } else {
            String::new()
        };
        let script = format!(
            "{env} sh -c 'echo $$ > {pidfile}; exec \"$0\" \"$@\"' {bin} console --config {config} {stderr}; code=$?; echo TTY $(stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo)$' | tr '\\n' ' '); echo FERRY_EXIT=$code; sleep 120",
            bin = env!("CARGO_BIN_EXE_ferry"),
            config = config.display(),
            pidfile = dir.path().join("ferry.pid").display(),
        );
        let started = tmux.run(&["new-session", "-d", "-s", "console", "-x", "140", "-y", "40", &script]);
        assert!(started.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&started.stderr));
        Some(Console { tmux, dir })
    }

    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("logs/ferry.log")
    }

    /// The pid of ferry (written by the shell that became ferry).
    fn ferry_pid(&self) -> u32 {
        let text = std::fs::read_to_string(self.dir.path().join("ferry.pid")).expect("ferry.pid");
        text.trim().parse().unwrap_or_else(|_| panic!("ferry.pid holds {text:?}"))
    }

    fn alternate_screen(&self) -> bool {
        self.tmux.run(&["display", "-p", "-t", "console", "#{alternate_on}"]).stdout == b"1\n"
    }

    /// Waits for ferry to exit; asserts the exit code and that the terminal is restored.
    async fn assert_exit(&self, code: i32) -> String {
        self.assert_exit_within(code, Duration::from_secs(40)).await
    }

    /// [`Console::assert_exit`], with ferry given `limit` to exit.
    async fn assert_exit_within(&self, code: i32, limit: Duration) -> String {
        let pane = self.tmux.wait_for("FERRY_EXIT=", limit).await;
        assert!(pane.contains(&format!("FERRY_EXIT={code}")), "exit status, expected {code}:\n{pane}");
        let tty = pane.lines().find(|l| l.starts_with("TTY")).unwrap_or_default();
        assert!(
            tty.contains("icanon") && !tty.contains("-icanon") && !tty.contains("-echo"),
            "terminal left raw: {tty}"
        );
        assert!(!pane.contains("╭"), "the dashboard is still on the main screen:\n{pane}");
        assert!(!self.alternate_screen(), "alternate screen not left");
        pane
    }
}

#[actix_rt::test]
async fn console_in_tmux_raises_batch_size_and_quits_cleanly() {
    let Some(console) = Console::start("") else { return };
    let tmux = &console.tmux;
    let base = format!("http://{}", wait_for_log_bind(&console.log(), Duration::from_secs(30)));
    tmux.wait_for("batch size 10", Duration::from_secs(15)).await;
    // The upstream's first status report comes within a second.
    tmux.wait_for("last error", Duration::from_secs(5)).await;
    assert!(console.alternate_screen(), "on the alternate screen");
    let pane = tmux.capture();
    for pane_title in ["Lanes", "Batches", "Upstreams", "Failures", "Log", "high", "bulk", "mock"] {
        assert!(pane.contains(pane_title), "{pane_title} missing:\n{pane}");
    }
    assert!(!pane.contains("INFO"), "log lines were written into the terminal:\n{pane}");

    tmux.keys(&["+", "+", "+"]);
    tmux.wait_for("batch size 13", Duration::from_secs(10)).await;
    tmux.keys(&["b", "4", "2", "Enter"]);
    // The header changes at once; the status line when the engine has answered.
    let pane = tmux.wait_for("batch size set to 42", Duration::from_secs(10)).await;
    assert!(pane.contains("batch size 42"), "header:\n{pane}");
    let (status, body) = call(&base, "GET", "/api/v1/config", None, None).await;
    assert_eq!((status, body["batch_size"].as_u64()), (200, Some(42)), "{body}");
    // The same log line as a change through the HTTP API (written by a background thread).
    let logged = |text: &str| std::fs::read_to_string(console.log()).is_ok_and(|log| log.contains(text));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logged("event=config_changed change=\"batch_size=42\"") {
        assert!(Instant::now() < deadline, "event=config_changed for batch_size=42 not in the log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Pausing is a config change too, logged the same way.
    tmux.keys(&["p"]);
    tmux.wait_for("PAUSED", Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logged("event=config_changed change=\"paused=true\"") {
        assert!(Instant::now() < deadline, "event=config_changed for the pause not in the log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    tmux.keys(&["q"]);
    let pane = console.assert_exit(0).await;
    assert!(pane.contains("ferry console: drained"), "{pane}");
}

#[actix_rt::test]
async fn ctrl_c_quits_with_the_terminal_restored() {
    let Some(console) = Console::start("") else { return };
    wait_for_log_bind(&console.log(), Duration::from_secs(30));
    console.tmux.wait_for("batch size 10", Duration::from_secs(15)).await;
    console.tmux.keys(&["C-c"]);
    console.assert_exit(0).await;
}

#[actix_rt::test]
async fn a_panic_restores_the_terminal() {
    let Some(console) = Console::start("RUST_BACKTRACE=0 FERRY_CONSOLE_PANIC_DRILL=1") else { return };
    let pane = console.assert_exit(101).await;
    // Shown on the main screen, and the cursor left below it (not moved back over it).
    let message = pane.find("panicking on purpose");
    assert!(
        message.is_some_and(|m| pane.find("FERRY_EXIT").is_some_and(|e| m < e)),
        "panic message:\n{pane}"
    );
}

/// A console with a burst of 200 prompts under way against a mock that takes 10 s a call: the
/// burst cannot drain before a second `q`, nor within the shipped 30 s grace.
async fn busy_console() -> Option<Console> {
    let console = Console::start_with(Setup { mock_latency_ms: 10_000, ..Setup::default() })?;
    wait_for_log_bind(&console.log(), Duration::from_secs(30));
    console.tmux.wait_for("batch size 10", Duration::from_secs(15)).await;
    console.tmux.keys(&["s"]);
    console.tmux.wait_for("submitted 200 demo prompts", Duration::from_secs(10)).await;
    Some(console)
}

/// The exit report's line and the number it says was cut off.
fn cut_off_in(pane: &str) -> (&str, Option<u64>) {
    let report = pane.lines().find(|l| l.contains("ferry console: drained")).unwrap_or_default();
    let cut_off = report.split_once("items, ").and_then(|(_, rest)| rest.split(' ').next()?.parse().ok());
    (report, cut_off)
}

/// `q` with work in flight keeps the dashboard up while it drains, counting what is left; a
/// second `q` cuts the drain short and ferry exits 0, reporting what it cut off.
#[actix_rt::test]
async fn a_second_q_cuts_a_long_drain_short() {
    let Some(console) = busy_console().await else { return };
    let tmux = &console.tmux;
    tmux.keys(&["q"]);
    // The hint comes once a held-down `q` can no longer be taken for a second one.
    let pane = tmux.wait_for("q again", Duration::from_secs(10)).await;
    assert!(pane.contains("quitting: answering"), "{pane}");
    assert!(console.alternate_screen(), "the dashboard stays up while it drains");
    tmux.keys(&["q"]);
    // Without the cut-off the drain would run to the shipped 30 s grace.
    let pane = console.assert_exit_within(0, Duration::from_secs(15)).await;
    let (report, cut_off) = cut_off_in(&pane);
    assert!(cut_off.is_some_and(|n| n > 0), "the second q cut the drain short: {report:?}\n{pane}");
    let log = std::fs::read_to_string(console.log()).unwrap_or_default();
    assert!(log.contains("phase=cut_off"), "the cut-off is not in the log");
}

/// The same from a service manager: SIGTERM starts the drain with the dashboard up, a second
/// SIGTERM cuts it short.
#[actix_rt::test]
async fn a_second_sigterm_cuts_a_long_drain_short() {
    let Some(console) = busy_console().await else { return };
    let tmux = &console.tmux;
    let ferry = console.ferry_pid();
    let term = || {
        let sent = Command::new("sh").args(["-c", &format!("kill -TERM {ferry}")]).status().expect("sh runs");
        assert!(sent.success(), "kill -TERM {ferry}");
    };
    term();
    tmux.wait_for("quitting: answering", Duration::from_secs(10)).await;
    term();
    let pane = console.assert_exit_within(0, Duration::from_secs(15)).await;
    let (report, cut_off) = cut_off_in(&pane);
    assert!(cut_off.is_some_and(|n| n > 0), "the second SIGTERM cut the drain short: {report:?}\n{pane}");
    let log = std::fs::read_to_string(console.log()).unwrap_or_default();
    assert!(log.contains("phase=cut_off by=\"signal\"") || log.contains("phase=cut_off by=signal"), "{log}");
}

/// A terminal that goes away (an SSH session dropped: the pane's terminal closed, SIGHUP) ends
/// the console like a quit: it drains and exits — it neither hangs on the dead terminal nor
/// spins on it.
#[actix_rt::test]
async fn a_closed_terminal_ends_the_console_with_a_drain() {
    let Some(console) = Console::start("") else { return };
    let log = console.log();
    wait_for_log_bind(&log, Duration::from_secs(30));
    console.tmux.wait_for("batch size 10", Duration::from_secs(15)).await;
    let ferry = console.ferry_pid();
    // Should it hang, it must not outlive the test (it would spin on the dead terminal).
    let _reaper = KillOnDrop(ferry);
    console.tmux.run(&["kill-server"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alive(ferry) {
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(Instant::now() < deadline, "ferry still runs 20 s after its terminal closed; log:\n{log}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Whichever ferry noticed first — SIGHUP or the key stream ending — it drained to the end.
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log.contains("event=shutdown phase=done"), "the drain ran to its end:\n{log}");
}

/// Kills process `.0` when dropped, if it still runs.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = Command::new("sh").args(["-c", &format!("kill -KILL {}", self.0)]).status();
        }
    }
}

/// Whether process `pid` runs (a zombie does not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// An engine actor that panics is restarted without losing its items, and the dashboard stays
/// up through it: the panic is counted in the header, keys still work, `q` exits 0.
#[actix_rt::test]
async fn an_actor_panic_leaves_the_dashboard_up() {
    let env = "RUST_BACKTRACE=0 FERRY_CONSOLE_PANIC_DRILL=actor";
    let Some(console) = Console::start_with(Setup { env, stderr_to_file: true, ..Setup::default() }) else {
        return;
    };
    let tmux = &console.tmux;
    wait_for_log_bind(&console.log(), Duration::from_secs(30));
    tmux.wait_for("batch size 10", Duration::from_secs(15)).await;
    // The pool panics on the burst's first batch; the supervisor restarts it.
    tmux.keys(&["s"]);
    // Each waited for on its own: a capture can fall in the middle of a frame being written,
    // with the header new and the panes below not yet.
    tmux.wait_for("restarts 1", Duration::from_secs(15)).await;
    tmux.wait_for("actor pool panicked and was restarted", Duration::from_secs(10)).await;
    assert!(console.alternate_screen(), "the dashboard is still up");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(console.log())
        .is_ok_and(|log| log.contains("event=actor_restarted actor=pool"))
    {
        assert!(Instant::now() < deadline, "no restart of the pool in the log");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tmux.wait_for("ok 200 · failed 0", Duration::from_secs(30)).await;
    tmux.keys(&["+"]);
    tmux.wait_for("batch size 11", Duration::from_secs(10)).await;
    tmux.keys(&["q"]);
    console.assert_exit(0).await;
    // Nothing was printed into the terminal but the last report (a redraw could hide it).
    let stderr = std::fs::read_to_string(console.dir.path().join("stderr.txt")).expect("stderr.txt");
    assert!(stderr.contains("ferry console: drained"), "{stderr}");
    assert!(!stderr.contains("panicked"), "the panic was printed into the terminal:\n{stderr}");
}
