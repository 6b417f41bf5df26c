//! `tracing` to files made for `tail -F` and grep.
//!
//! [`init`] installs the global subscriber once at start. Events go, through a background writer
//! thread so actors never wait on the disk, to `logging.dir/logging.file` or to stderr. The file
//! being written always has the same name; rotation renames the finished file after its period
//! (`ferry.log.2026-11-25`) and starts a new one, so `tail -F logs/ferry.log` keeps following.
//!
//! Text lines read `2026-11-25T10:00:00.123456Z  INFO ferry::engine: event=batch_complete lane=high
//! size=6`: string values are bare unless they hold spaces, quotes or `=`, so
//! `grep event=batch_complete` works.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, LoggingConfig, Rotation};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log directory could not be created.
    #[error("cannot create log directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The log file could not be opened for appending.
    #[error("cannot open log file {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The level filter (from `logging.level` or `RUST_LOG`) does not parse.
    #[error("invalid log filter {filter:?} from {origin}: {reason}")]
    Filter {
        /// The filter text.
        filter: String,
        /// `logging.level` or `RUST_LOG`.
        origin: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// A global subscriber is already installed (init was called twice).
    #[error("logging is already initialised: {0}")]
    AlreadyInitialised(String),
}

/// Keeps the background log writer running; dropping it flushes queued lines and stops it.
#[derive(Debug)]
#[must_use = "logging stops when the guard is dropped"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// Installs the global subscriber from `config`, with `RUST_LOG` overriding `config.level` when
/// it is set. `to_files` writes to `config.dir/config.file` (rotated per `config.rotation`);
/// otherwise lines go to stderr (for `ferry check` and tests). Keep the guard until exit.
pub fn init(config: &LoggingConfig, to_files: bool) -> Result<LogGuard, LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    init_with(config, to_files, rust_log.as_deref())
}

/// [`init`] with the `RUST_LOG` override passed in rather than read from the environment.
pub fn init_with(
    config: &LoggingConfig,
    to_files: bool,
    rust_log: Option<&str>,
) -> Result<LogGuard, LoggingError> {
    install(config, to_files, rust_log, None)
}

/// A layer that gets every event besides the log file's (the console's log pane).
pub type Feed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// [`init`] plus `feed`, which sees events whatever the file's filter; it does its own
/// filtering. For the console, which draws the last log events and writes no log to the terminal.
pub fn init_with_feed(config: &LoggingConfig, to_files: bool, feed: Feed) -> Result<LogGuard, LoggingError> {
    let rust_log = std::env::var("RUST_LOG").ok();
    install(config, to_files, rust_log.as_deref(), Some(feed))
}

fn install(
    config: &LoggingConfig,
    to_files: bool,
    rust_log: Option<&str>,
    feed: Option<Feed>,
) -> Result<LogGuard, LoggingError> {
    let filter = filter(config, rust_log)?;
    // Lossy on purpose: under a burst the engine drops log lines rather than wait on the disk.
    let (writer, worker) = if to_files {
        let file = RotatingFile::open(&config.dir, &config.file, config.rotation, system_clock)?
            .keeping(config.keep_files);
        tracing_appender::non_blocking(file)
    } else {
        tracing_appender::non_blocking(io::stderr())
    };
    let layer = format_layer(config.format, writer);
    // The feed shows info and above only: unfiltered, it would make every debug and trace call
    // (ferry's per-item events, actix-http's per-request ones) build its event for nothing.
    let feed = feed.map(|feed| feed.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
    tracing_subscriber::registry()
        .with(feed)
        .with(layer.with_filter(filter))
        .try_init()
        .map_err(|e| LoggingError::AlreadyInitialised(e.to_string()))?;
    Ok(LogGuard { _worker: worker })
}

fn filter(config: &LoggingConfig, rust_log: Option<&str>) -> Result<EnvFilter, LoggingError> {
    let (text, origin) = match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => (text, "RUST_LOG"),
        None => (config.level.as_str(), "logging.level"),
    };
    EnvFilter::builder().parse(text).map_err(|e| LoggingError::Filter {
        filter: text.to_string(),
        origin,
        reason: e.to_string(),
    })
}

/// The layer writing `format` lines to `writer`.
fn format_layer<S, W>(format: LogFormat, writer: W) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    match format {
        LogFormat::Text => text_layer(writer).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .with_writer(writer)
            .boxed(),
    }
}

/// The `format = "text"` layer: RFC 3339 UTC time, level, target, then `key=value` fields.
fn text_layer<S, W>(writer: W) -> impl Layer<S> + Send + Sync
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer().with_ansi(false).fmt_fields(KeyValueFields).with_writer(writer)
}

/// Formats fields as `key=value`, leaving plain string values unquoted so that `event =
/// "batch_complete"` greps as `event=batch_complete` (tracing's default prints it quoted).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyValueFields;

impl<'writer> FormatFields<'writer> for KeyValueFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = KeyValueVisitor { writer, result: Ok(()), first: true };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct KeyValueVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl KeyValueVisitor<'_> {
    fn write(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            // A multi-line message must not break the one-event-per-line promise.
            write!(self.writer, "{separator}{}", value.replace('\r', "\\r").replace('\n', "\\n"))
        } else if is_bare(value) {
            write!(self.writer, "{separator}{}={value}", field.name())
        } else {
            write!(self.writer, "{separator}{}={value:?}", field.name())
        };
    }

    fn write_plain(&mut self, field: &Field, value: impl fmt::Display) {
        if self.result.is_ok() {
            let separator = if self.first { "" } else { " " };
            self.first = false;
            self.result = write!(self.writer, "{separator}{}={value}", field.name());
        }
    }
}

impl Visit for KeyValueVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.write(field, value);
    }

    // Numbers and booleans never need quotes, so they skip the String that quoting needs.
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.write_plain(field, value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.write_plain(field, value);
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.write_plain(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.write_plain(field, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, &format!("{value:?}"));
    }
}

/// Whether a value can be written without quotes and still be read back as one token.
fn is_bare(value: &str) -> bool {
    !value.is_empty() && !value.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '='))
}

fn system_clock() -> SystemTime {
    SystemTime::now()
}

/// A log file that keeps its name: when the period (hour or day, UTC) of the next line differs
/// from that of the lines already in the file, the file is renamed after its period and a new
/// one is opened under the same name.
///
/// Written by hand because `file-rotate` 0.8 panics when the directory cannot be created, rotates
/// on local rather than UTC time, names files by the rotation instant rather than the content's
/// period, and cannot have its clock injected outside its own tests.
struct RotatingFile<C> {
    path: PathBuf,
    rotation: Rotation,
    file: Option<File>,
    /// Period of the lines in the current file; `None` while it is empty.
    period: Option<u64>,
    clock: C,
    /// Rotated files kept (the newest); 0 keeps all.
    keep: usize,
}

impl<C: Fn() -> SystemTime> RotatingFile<C> {
    fn open(dir: &Path, name: &str, rotation: Rotation, clock: C) -> Result<Self, LoggingError> {
        std::fs::create_dir_all(dir)
            .map_err(|source| LoggingError::CreateDir { path: dir.to_path_buf(), source })?;
        let path = dir.join(name);
        let file = append(&path).map_err(|source| LoggingError::Open { path: path.clone(), source })?;
        // A file left by an earlier run holds lines of the period it was last written in.
        let period = file
            .metadata()
            .ok()
            .filter(|m| m.len() > 0)
            .and_then(|m| m.modified().ok())
            .and_then(|modified| period_of(rotation, modified));
        Ok(Self { path, rotation, file: Some(file), period, clock, keep: 0 })
    }

    /// Keeps only the newest `keep` rotated files (0: all), removing older ones at each rotation.
    fn keeping(mut self, keep: usize) -> Self {
        self.keep = keep;
        self
    }

    /// Removes rotated files (`<name>.<period>[.<n>]`) beyond the newest [`Self::keep`]. Names
    /// sort by period, so the first ones are the oldest.
    fn remove_old(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        let prefix = format!("{name}.");
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        let mut rotated: Vec<PathBuf> = entries
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.keep);
        for old in &rotated[..excess] {
            // A file that cannot be removed is tried again at the next rotation.
            let _ = std::fs::remove_file(old);
        }
    }

    fn rotate_if_due(&mut self) -> io::Result<()> {
        let now = period_of(self.rotation, (self.clock)());
        if let (Some(current), Some(now)) = (self.period, now)
            && current != now
        {
            self.file = None;
            let target = free_name(&self.path, &period_suffix(self.rotation, current));
            // If the rename fails the old file is simply appended to: losing lines is worse than
            // a late rotation, which is tried again at the next period.
            let _ = std::fs::rename(&self.path, &target);
            if self.keep > 0 {
                self.remove_old();
            }
        }
        self.period = now;
        if self.file.is_none() {
            self.file = Some(append(&self.path)?);
        }
        Ok(())
    }
}

impl<C: Fn() -> SystemTime> Write for RotatingFile<C> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.rotate_if_due()?;
        match &mut self.file {
            Some(file) => file.write(buf),
            None => Err(io::Error::other("log file is not open")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// The hour or day since the epoch that `time` falls in; `None` for `never`.
fn period_of(rotation: Rotation, time: SystemTime) -> Option<u64> {
    let secs = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    match rotation {
        Rotation::Never => None,
        Rotation::Hourly => Some(secs / 3_600),
        Rotation::Daily => Some(secs / 86_400),
    }
}

/// `2026-11-25` for a day, `2026-11-25-14` for an hour (UTC).
fn period_suffix(rotation: Rotation, period: u64) -> String {
    let (days, hour) = match rotation {
        Rotation::Hourly => (period / 24, Some(period % 24)),
        Rotation::Daily | Rotation::Never => (period, None),
    };
    // A day count from a SystemTime is always within `time`'s range; the epoch is the fallback.
    let date = time::OffsetDateTime::from_unix_timestamp((days * 86_400) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date();
    let (year, month, day) = (date.year(), u8::from(date.month()), date.day());
    match hour {
        Some(hour) => format!("{year:04}-{month:02}-{day:02}-{hour:02}"),
        None => format!("{year:04}-{month:02}-{day:02}"),
    }
}

/// `path.suffix`, or `path.suffix.N` when an earlier run already left that name.
fn free_name(path: &Path, suffix: &str) -> PathBuf {
    let base = format!("{}.{suffix}", path.display());
    let mut candidate = PathBuf::from(&base);
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.{n}"));
        n += 1;
    }
    candidate
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// 2026-11-25T23:59:59Z.
    const LATE_NOV_25: u64 = 1_795_651_199;

    fn clock_at(secs: &Arc<AtomicU64>) -> impl Fn() -> SystemTime + use<> {
        let secs = Arc::clone(secs);
        move || UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst))
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn only_the_newest_rotated_files_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other.log.2026-01-01"), "another log\n").unwrap();
        let now = Arc::new(AtomicU64::new(LATE_NOV_25));
        let mut file =
            RotatingFile::open(dir.path(), "ferry.log", Rotation::Daily, clock_at(&now)).unwrap().keeping(2);
        for day in 0..5 {
            now.store(LATE_NOV_25 + day * 86_400, Ordering::SeqCst);
            file.write_all(format!("day {day}\n").as_bytes()).unwrap();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["ferry.log", "ferry.log.2026-11-27", "ferry.log.2026-11-28", "other.log.2026-01-01"]
        );
        assert_eq!(read(&dir.path().join("ferry.log")), "day 4\n");
    }

    #[test]
    fn period_suffixes_are_calendar_dates() {
        assert_eq!(period_suffix(Rotation::Daily, 0), "1970-01-01");
        assert_eq!(period_suffix(Rotation::Daily, LATE_NOV_25 / 86_400), "2026-11-25");
        assert_eq!(period_suffix(Rotation::Daily, 11_016), "2000-02-29");
        assert_eq!(period_suffix(Rotation::Daily, 11_017), "2000-03-01");
        assert_eq!(period_suffix(Rotation::Hourly, LATE_NOV_25 / 3_600), "2026-11-25-23");
    }

    #[test]
    fn daily_rotation_renames_the_old_file_and_reopens_the_base_name() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(LATE_NOV_25));
        let mut file = RotatingFile::open(dir.path(), "ferry.log", Rotation::Daily, clock_at(&now)).unwrap();
        file.write_all(b"first day\n").unwrap();
        now.store(LATE_NOV_25 + 1, Ordering::SeqCst);
        file.write_all(b"second day\n").unwrap();
        file.write_all(b"still second day\n").unwrap();
        file.flush().unwrap();
        assert_eq!(read(&dir.path().join("ferry.log.2026-11-25")), "first day\n");
        assert_eq!(read(&dir.path().join("ferry.log")), "second day\nstill second day\n");
    }

    #[test]
    fn hourly_rotation_names_the_hour_and_skips_taken_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.log.2026-11-25-22"), "earlier run\n").unwrap();
        let hour_22 = LATE_NOV_25 - 3_600;
        let now = Arc::new(AtomicU64::new(hour_22));
        let mut file = RotatingFile::open(dir.path(), "app.log", Rotation::Hourly, clock_at(&now)).unwrap();
        file.write_all(b"at 22\n").unwrap();
        now.store(LATE_NOV_25, Ordering::SeqCst);
        file.write_all(b"at 23\n").unwrap();
        assert_eq!(read(&dir.path().join("app.log.2026-11-25-22")), "earlier run\n");
        assert_eq!(read(&dir.path().join("app.log.2026-11-25-22.1")), "at 22\n");
        assert_eq!(read(&dir.path().join("app.log")), "at 23\n");
    }

    #[test]
    fn a_file_left_from_an_earlier_day_is_rotated_on_the_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.log");
        std::fs::write(&path, "yesterday\n").unwrap();
        let yesterday = UNIX_EPOCH + Duration::from_secs(LATE_NOV_25 - 86_400);
        File::options().append(true).open(&path).unwrap().set_modified(yesterday).unwrap();
        let now = Arc::new(AtomicU64::new(LATE_NOV_25));
        let mut file = RotatingFile::open(dir.path(), "ferry.log", Rotation::Daily, clock_at(&now)).unwrap();
        file.write_all(b"today\n").unwrap();
        assert_eq!(read(&dir.path().join("ferry.log.2026-11-24")), "yesterday\n");
        assert_eq!(read(&path), "today\n");
    }

    #[test]
    fn never_rotation_only_appends() {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(LATE_NOV_25));
        let mut file = RotatingFile::open(dir.path(), "ferry.log", Rotation::Never, clock_at(&now)).unwrap();
        file.write_all(b"a\n").unwrap();
        now.store(LATE_NOV_25 + 86_400 * 3, Ordering::SeqCst);
        file.write_all(b"b\n").unwrap();
        assert_eq!(read(&dir.path().join("ferry.log")), "a\nb\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_uncreatable_directory_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, "").unwrap();
        let result = RotatingFile::open(&blocker.join("logs"), "ferry.log", Rotation::Daily, system_clock);
        assert!(matches!(result, Err(LoggingError::CreateDir { .. })));
    }

    /// Captures what a subscriber writes, for format tests that need no global subscriber.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn text_fields_are_bare_unless_they_need_quotes() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(format_layer(LogFormat::Text, move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let lane = "high";
            tracing::info!(event = "batch_complete", lane = %lane, size = 6, error = "conn reset", x = "a=b");
            tracing::info!("two\nlines");
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with("event=batch_complete lane=high size=6 error=\"conn reset\" x=\"a=b\""),
            "{text}"
        );
        assert!(lines[0].contains("Z  INFO "), "RFC 3339 UTC time then level: {text}");
        assert!(lines[1].ends_with("two\\nlines"), "{text}");
    }

    #[test]
    fn json_lines_carry_event_fields_at_the_top_level() {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber =
            tracing_subscriber::registry().with(format_layer(LogFormat::Json, move || sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event = "batch_complete", size = 6);
        });
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value =
            serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        assert_eq!(line["event"], "batch_complete", "{text}");
        assert_eq!(line["size"], 6, "{text}");
        assert_eq!(line["level"], "INFO", "{text}");
    }

    #[test]
    fn rust_log_overrides_the_configured_level_and_bad_filters_are_errors() {
        let config = LoggingConfig::default();
        assert_eq!(
            filter(&config, Some("debug")).unwrap().max_level_hint(),
            Some(tracing::Level::DEBUG.into())
        );
        assert_eq!(filter(&config, Some(" ")).unwrap().max_level_hint(), Some(tracing::Level::INFO.into()));
        let bad = LoggingConfig { level: "ferry=loud".into(), ..LoggingConfig::default() };
        let err = filter(&bad, None).unwrap_err().to_string();
        assert!(err.contains("logging.level") && err.contains("ferry=loud"), "{err}");
    }
}
