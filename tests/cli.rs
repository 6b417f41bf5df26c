//! The `ferry` command line as a user meets it: each test runs the real binary in its own temp
//! dir (its working directory) with its own `$XDG_DATA_HOME`/`$HOME`.

use std::path::Path;
use std::process::Output;

mod common;

/// `ferry ARGS` in `dir`, with the per-user data directory under `dir` and no terminal.
fn ferry(dir: &Path, args: &[&str]) -> Output {
    common::ferry_command(dir).args(args).output().expect("run ferry")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The one line a failed command printed, after checking it is one line.
fn one_error_line(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{text}");
    lines[0].to_string()
}

const SHIPPED: &str = include_str!("../config.toml");

/// A valid config for `dir` that serves on a free port and keeps its files in `dir`.
fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ferry.toml");
    let text = format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[storage]\npath = \"{d}/data/ferry.db\"\n[logging]\ndir = \"{d}/logs\"\n",
        d = dir.display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn a_missing_config_file_is_one_line_naming_it_and_the_os_error_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [
        &["--config", "missing.toml"][..],
        &["serve", "--config", "missing.toml"],
        &["check", "-c", "missing.toml"],
    ] {
        let line = one_error_line(&ferry(dir.path(), args));
        assert!(line.starts_with("ferry: cannot read config file missing.toml: "), "{args:?}: {line}");
        assert_eq!(line.matches("No such file or directory").count(), 1, "{args:?}: {line}");
    }
}

#[test]
fn ferry_dash_dash_config_runs_the_console_on_that_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The file is read: a bad key in it is reported with its name and line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[batching]\nbatch_sise = 3\n").expect("write");
    let output = ferry(dir.path(), &["--config", bad.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let text = stderr(&output);
    assert!(text.contains("batch_sise") && text.contains("line 2"), "{text}");
    // A good file gets as far as the console, which needs a terminal (stdin is /dev/null here).
    let good = write_config(dir.path());
    let line = one_error_line(&ferry(dir.path(), &["--config", good.to_str().expect("utf-8 path")]));
    assert!(line.starts_with("ferry console: ") && line.contains("the console needs a terminal"), "{line}");
}

#[test]
fn without_a_config_file_the_built_in_one_runs_under_the_user_data_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = ferry(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let data = dir.path().join("xdg").join("ferry");
    let text = stderr(&output);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            format!(
                "ferry: no ./config.toml: running on the built-in config.toml, data and logs under {} \
                 (`ferry config init` writes the file out for editing)",
                data.display()
            ),
            "(built-in config.toml): ok".to_string(),
        ]
    );
    let resolved = String::from_utf8_lossy(&output.stdout);
    let db = format!("path = \"{}\"", data.join("data").join("ferry.db").display());
    let logs = format!("dir = \"{}\"", data.join("logs").display());
    assert!(resolved.lines().any(|l| l == db) && resolved.lines().any(|l| l == logs), "{resolved}");

    // Without $XDG_DATA_HOME: ~/.local/share/ferry.
    let output = common::ferry_command(dir.path())
        .arg("check")
        .env_remove("XDG_DATA_HOME")
        .output()
        .expect("run ferry");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let home_data = dir.path().join("home").join(".local").join("share").join("ferry");
    assert!(stderr(&output).contains(&format!("under {} ", home_data.display())), "{output:?}");

    // A real run on the built-in config (its mock upstream) writes its store and log there.
    let input = dir.path().join("prompts.jsonl");
    std::fs::write(&input, "{\"prompt\": \"one\"}\n{\"prompt\": \"two\"}\n").expect("write input");
    let output = ferry(dir.path(), &["run", "prompts.jsonl"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(stderr(&output).matches("built-in config.toml").count(), 1, "said once: {output:?}");
    let results = std::fs::read_to_string(dir.path().join("prompts.results.jsonl")).expect("results");
    assert_eq!(results.lines().count(), 2, "{results}");
    assert!(data.join("data").join("ferry.db").is_file(), "store under {}", data.display());
    assert!(data.join("logs").join("ferry.log").is_file(), "log under {}", data.display());
    assert!(!dir.path().join("data").exists() && !dir.path().join("logs").exists(), "nothing in the cwd");
}

#[test]
fn config_init_writes_the_shipped_file_and_overwrites_only_with_force() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = ferry(dir.path(), &["config", "init"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let written = dir.path().join("config.toml");
    assert_eq!(std::fs::read_to_string(&written).expect("written"), SHIPPED);
    // The file written is what `ferry` now reads by default, and it is valid.
    let output = ferry(dir.path(), &["check"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(stderr(&output).lines().any(|l| l == "config.toml: ok"), "{output:?}");

    let edited = dir.path().join("edited.toml");
    std::fs::write(&edited, "# mine\n").expect("write");
    let line = one_error_line(&ferry(dir.path(), &["config", "init", "edited.toml"]));
    assert_eq!(line, "ferry: edited.toml already exists; pass --force to replace it");
    assert_eq!(std::fs::read_to_string(&edited).expect("kept"), "# mine\n");
    let output = ferry(dir.path(), &["config", "init", "edited.toml", "--force"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(std::fs::read_to_string(&edited).expect("replaced"), SHIPPED);
}

#[test]
fn values_past_the_engine_bounds_are_refused_at_load_by_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = write_config(dir.path());
    let mut text = std::fs::read_to_string(&path).expect("read config");
    text.push_str("[batching]\nbatch_size = 20000\n");
    std::fs::write(&path, text).expect("write config");
    let config = path.to_str().expect("utf-8 path");
    std::fs::write(dir.path().join("in.jsonl"), "{\"prompt\": \"one\"}\n").expect("write input");
    for args in [
        &["check", "--config", config][..],
        &["serve", "--config", config],
        &["run", "in.jsonl", "--config", config],
        &["--config", config],
    ] {
        let output = ferry(dir.path(), args);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {output:?}");
        let text = stderr(&output);
        assert!(
            text.contains("batching.batch_size: must be an integer from 1 to 10000 (got 20000)"),
            "{args:?}: {text}"
        );
    }
    assert!(!dir.path().join("in.results.jsonl").exists(), "nothing ran");
}
