//! `ferry run` end to end over HTTP: a file of prompt lines through the real binary to
//! `ferry mock-upstream` (zero latency, no limits), timed, with the peak resident memory of the
//! `ferry run` process.
//!
//!   cargo bench --bench run_file                          # 100,000 lines
//!   FERRY_BENCH_LINES=1000000 cargo bench --bench run_file
//!
//! Targets on the 2-core machine: at least 5,000 lines/s, and a peak under 150 MB whatever the
//! file size. The time includes reading and checking the file, every upstream call over a
//! loopback socket, storing each outcome in SQLite, and writing the output file. Peak memory is
//! the kernel's high-water mark (`VmHWM` in /proc/PID/status), read until the process exits.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn ferry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The process's peak resident set in KiB, while it runs.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn write_input(path: &Path, lines: usize) {
    let file = std::fs::File::create(path).expect("create input");
    let mut out = std::io::BufWriter::new(file);
    for i in 1..=lines {
        writeln!(out, "{{\"prompt\": \"Summarise item {i} of the benchmark in one short sentence.\"}}")
            .expect("write input");
    }
    out.flush().expect("flush input");
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let lines: usize =
        std::env::var("FERRY_BENCH_LINES").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mock = ferry()
        .args(["mock-upstream", "--bind", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock upstream starts");
    let _mock = KillOnDrop(mock);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mock upstream did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[storage]
path = "{dir}/data/ferry.db"
[logging]
dir = "{dir}/logs"
level = "info"
[jobs]
lane = "bulk"
max_in_flight = 2000
[lanes.bulk]
rank = 0
window_ms = 0
max_batch = 100
delay_ms = 0
mode = "fanout"
[[upstreams]]
name = "mock-http"
provider = "openai"
base_url = "http://127.0.0.1:{port}/v1"
concurrency = 64
"#,
            dir = dir.path().display()
        ),
    )
    .expect("write config");
    let input = dir.path().join("prompts.jsonl");
    write_input(&input, lines);
    let output = dir.path().join("results.jsonl");

    let started = Instant::now();
    let run = ferry()
        .args(["run", input.to_str().expect("utf-8"), "-o", output.to_str().expect("utf-8")])
        .args(["--config", config.to_str().expect("utf-8")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry run starts");
    let pid = run.id();
    let mut run = KillOnDrop(run);
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Ok(Some(status)) = run.0.try_wait() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let elapsed = started.elapsed();
    assert!(status.success(), "ferry run failed: {status}");
    let written = std::fs::read_to_string(&output).map(|t| t.lines().count()).unwrap_or(0);
    assert_eq!(written, lines, "one output line per input line");
    let summary = run.0.stdout.take().map(|mut s| {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut text);
        text
    });
    println!("ferry run: {}", summary.unwrap_or_default().trim());
    println!(
        "{lines} lines in {:.2} s: {:.0} lines/s end to end over HTTP; peak RSS {:.1} MB",
        elapsed.as_secs_f64(),
        lines as f64 / elapsed.as_secs_f64(),
        peak as f64 / 1024.0
    );
}
