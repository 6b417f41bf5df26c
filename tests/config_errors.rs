//! Every bad config in `tests/invalid_configs/` is refused with a message that names the key,
//! says why, and (for parse errors) gives the line. Files are loaded as every command loads
//! them ([`ferry::app::config::load`]): parsed, validated, and checked against the engine's
//! bounds.

use std::path::{Path, PathBuf};

use ferry::config::{Config, ConfigError};

/// `path` loaded as a command loads its `--config`.
fn load(path: &Path) -> Result<Config, ConfigError> {
    ferry::app::config::load(Some(path.to_path_buf())).map(|(config, _)| config)
}

fn invalid_config(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid_configs").join(name)
}

/// (file, whether it fails to parse rather than to validate, fragments the message must hold).
const CASES: &[(&str, bool, &[&str])] = &[
    // Unknown keys, wrong types and bad enum values: refused by the parser, with the line.
    ("unknown_top_level_key.toml", true, &["verbose: unknown field `verbose`", "line 2, column 1"]),
    (
        "unknown_server_key.toml",
        true,
        &["server.colour: unknown field `colour`, expected one of `bind`", "`api_keys_env`", "line 3"],
    ),
    ("unknown_section.toml", true, &["lane", "unknown field `lane`", "line 4"]),
    ("unknown_lane_key.toml", true, &["lanes.high.windw_ms", "unknown field `windw_ms`", "line 3"]),
    ("unknown_upstream_key.toml", true, &["upstreams[0].api_key", "unknown field `api_key`", "line 8"]),
    (
        "unknown_mock_key.toml",
        true,
        &["upstreams[0].mock.failure_rate", "unknown field `failure_rate`", "line 7"],
    ),
    ("wrong_type.toml", true, &["batching.batch_size", "invalid type: string \"ten\"", "line 3"]),
    ("negative_number.toml", true, &["batching.batch_size", "line 2"]),
    ("bad_mode.toml", true, &["lanes.high.mode", "sideways", "fanout", "combined", "line 3"]),
    ("bad_provider.toml", true, &["upstreams[0].provider", "claude", "openai", "gemini", "mock", "line 3"]),
    ("bad_format.toml", true, &["logging.format", "xml", "text", "json", "line 2"]),
    ("bad_rotation.toml", true, &["logging.rotation", "weekly", "never", "hourly", "daily", "line 2"]),
    ("lane_missing_rank.toml", true, &["lanes.high", "missing field `rank`", "line 1"]),
    ("upstream_missing_provider.toml", true, &["upstreams[1]", "missing field `provider`", "line 5"]),
    // Not TOML at all: no key to name, the line and column of the syntax error.
    ("not_toml.toml", true, &["unclosed table, expected `]`", "line 1, column 10"]),
    // Values that parse but make no sense: refused by validate(), naming the key and the rule.
    ("zero_max_batch.toml", false, &["lanes.high.max_batch: must be at least 1 (got 0)"]),
    ("zero_batch_size.toml", false, &["batching.batch_size: must be at least 1 (got 0)"]),
    (
        "zero_queue_capacity.toml",
        false,
        &["batching.queue_capacity: must be at least 1", "lanes.bulk.queue_capacity: must be at least 1"],
    ),
    ("max_batch_over_queue_capacity.toml", false, &["lanes.high.max_batch: 50 is more than", "(20)"]),
    ("old_aging.toml", false, &["batching.aging_ms: no longer used", "batching.lower_share"]),
    ("big_lower_share.toml", false, &["batching.lower_share: must be between 0"]),
    ("no_lanes.toml", false, &["lanes: at least one lane is required"]),
    ("no_upstreams.toml", false, &["upstreams: at least one upstream is required"]),
    ("bad_lane_name.toml", false, &["lanes.High Priority", "a-z, 0-9, '_' and '-'"]),
    ("lane_model_not_served.toml", false, &["lanes.high.model", "\"gpt-4o\" is not served by any upstream"]),
    (
        "duplicate_upstream_names.toml",
        false,
        &["upstreams[1].name: \"a\" is used by upstreams[0] too; names must be unique"],
    ),
    ("openai_without_base_url.toml", false, &["upstreams[0].base_url: required for provider \"openai\""]),
    ("bad_base_url.toml", false, &["upstreams[0].base_url: must start with http:// or https://"]),
    ("base_url_on_mock.toml", false, &["upstreams[0].base_url: not used by provider \"mock\""]),
    (
        "bad_api_key_env.toml",
        false,
        &["upstreams[0].api_key_env", "must be an environment variable name like OPENAI_API_KEY"],
    ),
    (
        "gemini_without_api_key_env.toml",
        false,
        &["upstreams[0].api_key_env: required for provider \"gemini\""],
    ),
    (
        "openai_hosted_without_api_key_env.toml",
        false,
        &["upstreams[0].api_key_env: required for provider \"openai\"", "OPENAI_API_KEY"],
    ),
    ("zero_concurrency.toml", false, &["upstreams[0].concurrency: must be at least 1"]),
    ("zero_timeout.toml", false, &["upstreams[0].timeout_ms: must be at least 1"]),
    ("zero_rpm.toml", false, &["upstreams[0].rpm: must be at least 1 when set"]),
    (
        "backoff_base_over_max.toml",
        false,
        &["upstreams[0].backoff_max_ms: must be at least backoff_base_ms (5000)"],
    ),
    ("duplicate_model.toml", false, &["upstreams[0].models[1]: \"mock\" is listed twice"]),
    (
        "mock_error_rate_too_high.toml",
        false,
        &["upstreams[0].mock.error_rate: must be between 0.0 and 1.0 (got 1.5)"],
    ),
    (
        "mock_rates_sum_over_one.toml",
        false,
        &[
            "error_rate + rate_limit_rate + overload_rate + malformed_rate + drop_rate + timeout_rate must be at most 1.0",
        ],
    ),
    ("mock_knobs_on_openai.toml", false, &["upstreams[0].mock: only valid with provider = \"mock\""]),
    ("bad_log_level.toml", false, &["logging.level", "\"inof\" is not a level"]),
    ("log_file_with_directory.toml", false, &["logging.file: must be a plain file name"]),
    ("bad_bind.toml", false, &["server.bind: must be HOST:PORT"]),
    (
        "bad_api_keys_env.toml",
        false,
        &["server.api_keys_env: must be the name of an environment variable", "not a key"],
    ),
    ("zero_max_body_bytes.toml", false, &["server.max_body_bytes: must be at least 1 (got 0)"]),
    (
        "zero_file_limits.toml",
        false,
        &["files.max_bytes: must be at least 1 (got 0)", "files.max_lines: must be at least 1 (got 0)"],
    ),
    (
        "bad_cors_origin.toml",
        false,
        &["server.cors_origins[1]: \"https://app.example.com/\" must be an origin"],
    ),
    ("same_key_variables.toml", false, &["server.admin_keys_env: must differ from server.api_keys_env"]),
    // Values past the engine's bounds, which a live change would be refused too.
    (
        "over_engine_bounds.toml",
        false,
        &[
            "batching.batch_size: must be an integer from 1 to 10000 (got 20000)",
            "batching.batch_delay_ms: must be an integer from 0 to 600000 (got 600001)",
            "lanes.high.max_batch: must be an integer from 1 to 10000 (got 10001)",
            "lanes.high.window_ms: must be an integer from 0 to 600000 (got 900000)",
            "lanes.high.delay_ms: must be an integer from 0 to 600000 (got 700000)",
            "lanes.high.latency_ms: must be an integer from 1 to 86400000 (got 86400001)",
        ],
    ),
];

#[test]
fn every_invalid_config_is_refused_with_its_key_and_reason() {
    let mut failures = Vec::new();
    for &(file, is_parse_error, fragments) in CASES {
        let path = invalid_config(file);
        let message = match load(&path) {
            Ok(_) => {
                failures.push(format!("{file}: loaded, but should have been refused"));
                continue;
            }
            Err(e @ ConfigError::Parse { .. }) if is_parse_error => e.to_string(),
            Err(e @ ConfigError::Invalid { .. }) if !is_parse_error => e.to_string(),
            Err(e) => {
                failures.push(format!("{file}: wrong kind of error: {e}"));
                continue;
            }
        };
        for fragment in fragments {
            if !message.contains(fragment) {
                failures.push(format!("{file}: message lacks {fragment:?}:\n{message}"));
            }
        }
        if !message.contains(file) {
            failures.push(format!("{file}: message does not name the file:\n{message}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_file_in_invalid_configs_has_a_case() {
    let dir = invalid_config("");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != "several_problems.toml")
        .collect();
    files.sort();
    let mut cases: Vec<String> = CASES.iter().map(|(file, _, _)| file.to_string()).collect();
    cases.sort();
    assert_eq!(files, cases);
}

#[test]
fn several_problems_are_reported_at_once() {
    let Err(ConfigError::Invalid { problems, .. }) = load(&invalid_config("several_problems.toml")) else {
        panic!("several_problems.toml should fail validation");
    };
    let expected = [
        "batching.batch_size: must be at least 1",
        "lanes.high.max_batch: must be at least 1",
        "upstreams[0].base_url: required for provider \"openai\"",
        "upstreams[1].concurrency: must be at least 1",
        "upstreams[1].mock.error_rate: must be between 0.0 and 1.0",
        "upstreams[1].name: \"a\" is used by upstreams[0] too",
    ];
    for fragment in expected {
        assert!(problems.iter().any(|p| p.contains(fragment)), "no {fragment:?} in {problems:#?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");
}

#[test]
fn a_secret_in_an_unknown_key_is_not_echoed() {
    let message = load(&invalid_config("unknown_upstream_key.toml")).unwrap_err().to_string();
    assert!(!message.contains("sk-do-not-put-keys-here"), "{message}");
}

#[test]
fn a_key_pasted_as_the_key_variable_is_not_echoed() {
    let message = load(&invalid_config("bad_api_keys_env.toml")).unwrap_err().to_string();
    assert!(!message.contains("sk-123"), "{message}");
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_path() {
    let path = invalid_config("there_is_no_such_file.toml");
    let err = load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("there_is_no_such_file.toml"), "{err}");
}

#[test]
fn shipped_config_toml_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.upstreams.iter().all(|u| u.api_key_env.is_none()), "must run with no key");
    assert_eq!(config.validate(), Ok(()));
}

#[test]
fn an_empty_file_means_all_defaults() {
    let config = Config::parse("", Path::new("empty.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config, Config::default());
}
