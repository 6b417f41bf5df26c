//! The `ferry` command line: a thin layer over the library.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ferry::app::config::Source;
use ferry::config::Config;
use ferry::daemon;
use ferry::engine::{Engine, Prompt};
use ferry::mock_upstream::{self, MockUpstreamArgs};
use ferry::run::RunArgs;
use std::io::IsTerminal as _;

mod progress;

/// ferry: an actor-based LLM batch engine.
///
/// Without a command, runs the operator console (`ferry [--config FILE]`). Without --config,
/// every command reads ./config.toml, or, when there is none, the built-in config.toml with its
/// data and logs under $XDG_DATA_HOME/ferry (default ~/.local/share/ferry).
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The console's options, for `ferry` without a command.
    #[command(flatten)]
    console: ConsoleArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print what it resolves to (exit 1 on errors).
    Check {
        /// The config file (default ./config.toml, else the built-in one).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the engine and the HTTP API as a headless daemon, logging to files; SIGINT/SIGTERM
    /// stops intake, lets in-flight work finish within `[server] shutdown_grace_ms`, exits 0.
    Serve {
        /// The config file (default ./config.toml, else the built-in one).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a file of prompts through the engine without a server, writing one result line per
    /// input line; the same command again resumes an interrupted run.
    Run(RunCommand),
    /// Serve the simulated upstream over HTTP (OpenAI- and Gemini-compatible).
    MockUpstream(MockUpstreamArgs),
    /// The operator console (the default): the engine, the HTTP API and a live dashboard in one
    /// process; or, with --connect, the dashboard of a `ferry serve` daemon.
    Console(ConsoleArgs),
    /// The config file: `ferry config init` writes the documented config.toml out for editing.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Write a copy of the database safe to attach to a bug report: counts, states, times and
    /// settings kept; prompts, answers, file names and other caller data removed
    /// (docs/security.md lists what it holds). Safe while `ferry serve` runs.
    SupportBundle {
        /// The bundle to write (a new file; an existing one is never replaced).
        output: PathBuf,
        /// The config file naming the database (default ./config.toml, else the built-in one).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Push a burst of prompts through the engine and print what each lane's batches did.
    Demo {
        /// The config file (default ./config.toml, else the built-in one).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Prompts per lane.
        #[arg(long, default_value_t = 40)]
        prompts: usize,
    },
}

/// `ferry config …`.
#[derive(Subcommand)]
enum ConfigCommand {
    /// Write the shipped config.toml (every key, documented) to PATH for editing.
    Init {
        /// Where to write it.
        #[arg(default_value = "config.toml")]
        path: PathBuf,
        /// Replace a file that is already there.
        #[arg(long)]
        force: bool,
    },
}

/// `ferry run`'s arguments.
#[derive(clap::Args)]
struct RunCommand {
    /// The input: OpenAI batch JSONL, `{"prompt": …}` JSONL, or CSV (with --template).
    file: PathBuf,
    /// The output JSONL (default: FILE's name with `.results.jsonl`).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The lane the prompts go through (default: `[jobs] lane`).
    #[arg(long)]
    lane: Option<String>,
    /// Prompt template with `{column}` placeholders, for CSV rows or JSONL objects.
    #[arg(long, short)]
    template: Option<String>,
    /// Model for lines that name none (default: the lane's, else the first upstream's first).
    #[arg(long)]
    model: Option<String>,
    /// Sampling temperature for lines that set none (part of what makes the run the same run).
    /// Without it the lane's, else the server's default applies (llama.cpp: 0.8).
    #[arg(long, value_parser = parse_temperature)]
    temperature: Option<f32>,
    /// Reply budget per line for lines that set none (part of what makes the run the same run).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: Option<u32>,
    /// Ask every prompt again, forgetting what an earlier run of the same command stored
    /// (without it, the same command resumes an unfinished run and does nothing after a finished one).
    #[arg(long)]
    fresh: bool,
    /// The config file (default ./config.toml, else the built-in one).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

/// `ferry console` options.
#[derive(clap::Args, Default)]
struct ConsoleArgs {
    /// The config file (in-process console; default ./config.toml, else the built-in one).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Attach to the daemon at this URL (http://HOST:PORT) instead of running an engine.
    #[arg(long, value_name = "URL")]
    connect: Option<String>,
    /// Bearer key for --connect: an admin key (the event stream is admin-only); default $FERRY_API_KEY.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { config }) => check(config),
        Some(Command::Serve { config }) => serve(config),
        Some(Command::Run(args)) => run_file(args),
        Some(Command::MockUpstream(args)) => mock_upstream(args),
        Some(Command::Demo { config, prompts }) => demo(config, prompts),
        Some(Command::Config(ConfigCommand::Init { path, force })) => config_init(&path, force),
        Some(Command::Console(args)) => console(args),
        Some(Command::SupportBundle { output, config }) => support_bundle(config, &output),
        None => console(cli.console),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("ferry: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: a message that already quotes its
/// cause (as `cannot read config file X: No such file…` does) does not repeat it.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Where a command's configuration comes from: the file given, else `./config.toml`, else the
/// built-in config.toml with its files under the per-user data directory (said once, on
/// stderr).
fn load_config(path: Option<PathBuf>) -> anyhow::Result<(Config, String)> {
    let (config, source) = ferry::app::config::load(path)?;
    if let Source::Shipped(dir) = &source {
        eprintln!(
            "ferry: no ./config.toml: running on the built-in config.toml, data and logs under {} \
             (`ferry config init` writes the file out for editing)",
            dir.display()
        );
    }
    Ok((config, source.name()))
}

fn check(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, name) = load_config(path)?;
    print!("{}", config.render());
    eprintln!("{name}: ok");
    Ok(ExitCode::SUCCESS)
}

fn config_init(path: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if path.exists() && !force {
        anyhow::bail!("{} already exists; pass --force to replace it", path.display());
    }
    std::fs::write(path, ferry::config::SHIPPED)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {} (every key, documented); run `ferry check --config {0}` after editing",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn support_bundle(path: Option<PathBuf>, output: &Path) -> anyhow::Result<ExitCode> {
    let (config, _) = load_config(path)?;
    let summary = ferry::store::bundle::write(&config.storage.path, output)?;
    println!("{}: {summary}", output.display());
    Ok(ExitCode::SUCCESS)
}

fn serve(path: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let (config, _) = load_config(path)?;
    let _guard = ferry::logging::init(&config.logging, true).context("starting logging")?;
    let log = config.logging.dir.join(&config.logging.file);
    match actix::System::new().block_on(async move { daemon::run(config, daemon::signals()).await }) {
        Ok(_) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            tracing::error!(event = "serve_failed", error = %error);
            eprintln!("ferry serve: {error} (log: {})", log.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A temperature from the command line: 0.0 to 2.0.
fn parse_temperature(value: &str) -> Result<f32, String> {
    match value.parse::<f32>() {
        Ok(t) if (0.0..=2.0).contains(&t) => Ok(t),
        _ => Err(format!("`{value}` is not a temperature; use a number from 0.0 to 2.0")),
    }
}

fn run_file(command: RunCommand) -> anyhow::Result<ExitCode> {
    let (config, _) = load_config(command.config)?;
    let _guard = ferry::logging::init(&config.logging, true).context("starting logging")?;
    let args = RunArgs {
        input: command.file,
        output: command.output,
        lane: command.lane,
        template: command.template,
        model: command.model,
        temperature: command.temperature,
        max_tokens: command.max_tokens,
        fresh: command.fresh,
    };
    let mut progress = progress::Progress::new(std::io::stderr().is_terminal());
    let result = actix::System::new().block_on(async {
        ferry::run::run(config, args, |state| progress.show(state), daemon::signals()).await
    });
    progress.finish();
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            eprintln!("ferry run: {error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let counts = report.progress.counts;
    let rate = (counts.done() - report.resumed_from) as f64 / report.elapsed.as_secs_f64().max(1e-9);
    if report.interrupted {
        eprintln!(
            "interrupted: {}/{} done ({} failed); run the same command again to resume",
            counts.done(),
            counts.total,
            counts.failed
        );
        return Ok(ExitCode::from(130));
    }
    println!(
        "{}: {} lines, {} answered, {} failed{} in {:.1} s ({rate:.0} lines/s)",
        report.output.display(),
        counts.total,
        counts.completed,
        counts.failed,
        if report.resumed_from > 0 {
            format!(" ({} done by an earlier run)", report.resumed_from)
        } else {
            String::new()
        },
        report.elapsed.as_secs_f64(),
    );
    Ok(ExitCode::SUCCESS)
}

fn mock_upstream(args: MockUpstreamArgs) -> anyhow::Result<ExitCode> {
    let logging = ferry::config::LoggingConfig { level: "info".into(), ..Default::default() };
    let _guard = ferry::logging::init(&logging, false).context("starting logging")?;
    actix::System::new().block_on(mock_upstream::serve(args)).context("mock upstream")?;
    Ok(ExitCode::SUCCESS)
}

fn demo(path: Option<PathBuf>, prompts: usize) -> anyhow::Result<ExitCode> {
    let (config, _) = load_config(path)?;
    let _guard = ferry::logging::init(&config.logging, true).context("starting logging")?;
    actix::System::new().block_on(async move {
        let engine = Engine::start(&config)?;
        let started = Instant::now();
        let mut waiting = Vec::new();
        for lane in engine.lanes() {
            let batch: Vec<Prompt> =
                (0..prompts).map(|i| Prompt::text(format!("{lane} prompt {i}"))).collect();
            waiting.push((lane.clone(), engine.submit(&lane, batch).await?));
        }
        println!("submitted {prompts} prompts to each of {} lanes", waiting.len());
        for (lane, submission) in waiting {
            let outcomes = submission.collect().await;
            let ok = outcomes.iter().filter(|o| o.is_ok()).count();
            println!("{lane:>8}: {ok}/{} answered after {:?}", outcomes.len(), started.elapsed());
        }
        let snapshot = engine.snapshot().await?;
        println!("{} batches; recent:", snapshot.batches);
        for batch in snapshot.recent_batches.iter().rev().take(12) {
            println!(
                "  {} {:>8} {:?} size {:>3} ok {:>3} failed {} in {:.1} ms",
                batch.id,
                batch.lane,
                batch.mode,
                batch.size,
                batch.ok,
                batch.failed,
                batch.duration.as_secs_f64() * 1000.0
            );
        }
        engine.shutdown(Duration::from_secs(5)).await;
        println!("logs: {}", config.logging.dir.join(&config.logging.file).display());
        Ok(ExitCode::SUCCESS)
    })
}

// ─── The console (issue 5) ──────────────────────────────────────────────────────────────────

fn console(args: ConsoleArgs) -> anyhow::Result<ExitCode> {
    use ferry::console::{self, LogFeed};
    let (tx, updates) = console::channel();
    if let Some(url) = args.connect {
        // Attached: no engine here; only the console's own events, to its log pane.
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        let _ = tracing_subscriber::registry().with(LogFeed::new(tx.clone())).try_init();
        let key = args.api_key.or_else(|| std::env::var("FERRY_API_KEY").ok().filter(|k| !k.is_empty()));
        let run =
            async move { console::run_remote(&url, key, tx, updates, daemon::stop_signals(true)).await };
        actix::System::new().block_on(run).context("ferry console --connect")?;
        return Ok(ExitCode::SUCCESS);
    }
    let (config, _) = load_config(args.config)?;
    let feed = Box::new(LogFeed::new(tx.clone()));
    let _guard = ferry::logging::init_with_feed(&config.logging, true, feed).context("starting logging")?;
    let log = config.logging.dir.join(&config.logging.file);
    let run = async move { console::run_local(config, tx, updates, true, daemon::stop_signals(true)).await };
    match actix::System::new().block_on(run) {
        Ok(report) => {
            eprintln!(
                "ferry console: drained {} items, {} cut off; log: {}",
                report.drained,
                report.cut_off,
                log.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            tracing::error!(event = "console_failed", error = %error);
            eprintln!(
                "ferry console: {error} (the console needs a terminal; `ferry serve` runs headless; log: {})",
                log.display()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
