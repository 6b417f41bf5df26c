//! Skipping a test whose outside tool is missing, loudly, or failing when the tool is required.
//!
//! libtest captures `eprintln!` and shows it only for a failing test, so a skip notice written
//! with it vanishes from a passing run. [`notice`] writes to the process's stderr handle
//! directly, which libtest does not capture: the banner reaches the terminal (and a CI log) in
//! every `cargo test`. The three tests with outside tools (tmux, the OpenAI SDK, a real LLM)
//! all skip through here, each with a `FERRY_…_REQUIRED=1` switch that turns the skip into a
//! failure (`.ci/run` sets all three).

/// Writes `text` to stderr, past libtest's capture.
pub fn notice(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Whether `var` is set to `1`.
pub fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| v.trim() == "1")
}

/// Skips the calling test with a banner naming `what` is missing and `how` to provide it, or
/// panics when `required_var` is `1`.
pub fn skip(what: &str, how: &str, required_var: &str) {
    assert!(!required(required_var), "{required_var}=1 but {what}: the test cannot run");
    let line = "!".repeat(78);
    notice(&format!(
        "\n{line}\n!! SKIPPED: {what}\n!! {how}\n!! (set {required_var}=1 to make this a failure)\n{line}\n"
    ));
}
