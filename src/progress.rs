//! `ferry run`'s progress: an indicatif bar on a terminal, a plain line every few seconds when
//! stderr is a file or a pipe (CI logs, `nohup`).

use std::time::{Duration, Instant};

use ferry::jobs::JobProgress;
use indicatif::{ProgressBar, ProgressStyle};

/// Time between two plain progress lines.
const LINE_EVERY: Duration = Duration::from_secs(2);

/// See the module docs.
pub enum Progress {
    /// A live bar.
    Bar(ProgressBar),
    /// Plain lines.
    Lines { last: Option<Instant>, started: Instant, first_done: Option<u64> },
}

impl Progress {
    /// A bar when `terminal`, else plain lines.
    pub fn new(terminal: bool) -> Progress {
        if !terminal {
            return Progress::Lines { last: None, started: Instant::now(), first_done: None };
        }
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress::Bar(bar)
    }

    /// Shows the job's state.
    pub fn show(&mut self, state: &JobProgress) {
        let counts = state.counts;
        match self {
            Progress::Bar(bar) => {
                bar.set_length(counts.total);
                bar.set_position(counts.done());
                bar.set_message(format!("{} failed, {}", counts.failed, state.status));
            }
            Progress::Lines { last, started, first_done } => {
                let base = *first_done.get_or_insert(counts.done());
                if last.is_some_and(|at| at.elapsed() < LINE_EVERY) && !state.status.is_terminal() {
                    return;
                }
                *last = Some(Instant::now());
                let rate = (counts.done() - base.min(counts.done())) as f64
                    / started.elapsed().as_secs_f64().max(1e-9);
                eprintln!(
                    "progress: {}/{} done, {} failed, {rate:.0} lines/s, {}",
                    counts.done(),
                    counts.total,
                    counts.failed,
                    state.status
                );
            }
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
