//! `logging::init` writes grep-able lines to `ferry.log`. The global subscriber can be set once
//! per process and each integration test file is its own process, so this file holds the only
//! test that calls `init`.

use ferry::config::{LogFormat, LoggingConfig, Rotation};
use ferry::logging;

#[test]
fn init_writes_key_value_lines_to_the_fixed_file_name_at_the_configured_level() {
    let dir = tempfile::tempdir().unwrap();
    let config = LoggingConfig {
        keep_files: 0,
        dir: dir.path().join("logs"),
        file: "ferry.log".into(),
        level: "info".into(),
        format: LogFormat::Text,
        rotation: Rotation::Daily,
        log_payloads: false,
    };
    // No RUST_LOG override, whatever the environment running the tests holds.
    let guard = logging::init_with(&config, true, None).unwrap();
    tracing::info!(event = "batch_complete", batch_id = %"01JD0000", lane = %"high", size = 6, duration_ms = 812);
    tracing::debug!(event = "enqueue", item = 1);
    let again = logging::init_with(&config, true, None);
    assert!(matches!(again, Err(logging::LoggingError::AlreadyInitialised(_))), "{again:?}");
    drop(guard);

    let text = std::fs::read_to_string(dir.path().join("logs/ferry.log")).unwrap();
    let line = text.lines().find(|l| l.contains("event=batch_complete")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("batch_id=01JD0000 lane=high size=6 duration_ms=812"), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(!text.contains("DEBUG") && !text.contains("event=enqueue"), "debug line at level info:\n{text}");
    assert!(!text.contains('\u{1b}'), "ANSI colours in the file:\n{text}");
}
