//! What keys mean right now: normal commands, the help overlay, or typing a number; and which
//! pane the scroll keys move.

/// What a keypress means now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Keys are commands.
    Normal,
    /// The help overlay is shown; any key closes it.
    Help,
    /// Typing a number for `field`.
    Input {
        /// What the number will set.
        field: Field,
        /// Digits typed so far.
        buffer: String,
    },
}

/// A value the operator can type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `[batching] batch_size`.
    BatchSize,
    /// `[batching] batch_delay_ms`.
    BatchDelay,
    /// The selected lane's `window_ms`.
    LaneWindow(String),
    /// The selected lane's `max_batch`.
    LaneMaxBatch(String),
}

impl Field {
    /// How the prompt names it.
    pub fn label(&self) -> String {
        match self {
            Field::BatchSize => "batch size".into(),
            Field::BatchDelay => "batch delay (ms)".into(),
            Field::LaneWindow(lane) => format!("{lane} window (ms)"),
            Field::LaneMaxBatch(lane) => format!("{lane} max batch"),
        }
    }
}

/// Which scrollable pane the scroll keys move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Failures.
    Failures,
    /// Log events.
    Log,
}
