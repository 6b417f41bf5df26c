//! The official `openai` Python SDK against a real `ferry serve`: `tests/sdk/openai_sdk_compat.py`
//! uploads a batch file, creates the batch, polls it, downloads the output, and calls
//! chat.completions.create — all through the SDK, unchanged, with ferry as its base URL.
//!
//! Set `FERRY_SDK_PYTHON` to a Python with `openai` installed to run it (`.ci/run` makes a
//! virtualenv and installs it from PyPI). Unset, the test skips with a banner on stderr — unless
//! `FERRY_SDK_REQUIRED=1` (CI sets it when the install worked), in which case it fails.

mod common;

use std::process::{Command, Stdio};

use common::{KillOnDrop, wait_for_bind};

#[test]
fn the_official_openai_sdk_runs_a_batch_and_a_chat_completion() {
    let Ok(python) = std::env::var("FERRY_SDK_PYTHON") else {
        common::skip::skip(
            "OpenAI SDK test: FERRY_SDK_PYTHON is not set",
            "set FERRY_SDK_PYTHON to a python with `openai` installed (.ci/run makes one)",
            "FERRY_SDK_REQUIRED",
        );
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("ferry.toml");
    let text = format!(
        r#"
[server]
bind = "127.0.0.1:0"
api_keys_env = "FERRY_SDK_TEST_KEYS"
admin_keys_env = "FERRY_SDK_TEST_ADMIN_KEYS"
[storage]
path = "{dir}/data/ferry.db"
[logging]
dir = "{dir}/logs"
level = "info"
[jobs]
lane = "bulk"
"#,
        dir = dir.path().display()
    );
    std::fs::write(&config, text).expect("write config");
    let log = dir.path().join("logs/ferry.log");
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("FERRY_SDK_TEST_KEYS", "sdk-test-key-3c1f")
        .env_remove("FERRY_SDK_TEST_ADMIN_KEYS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("ferry serve starts");
    let mut ferry = KillOnDrop(child);
    let bind = wait_for_bind(&log, &mut ferry);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_compat.py");
    let output = Command::new(&python)
        .arg(script)
        .env("FERRY_SDK_BASE_URL", format!("http://{bind}/v1"))
        .env("FERRY_SDK_API_KEY", "sdk-test-key-3c1f")
        .output()
        .expect("the SDK script runs");
    common::skip::notice(&String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "the SDK script failed:\n{}", String::from_utf8_lossy(&output.stderr));
}
