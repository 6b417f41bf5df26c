//! Key bindings as data: input handling and the help overlay read the same table.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does in normal mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Quit, draining queued and in-flight work first.
    Quit,
    /// Show or hide the help.
    Help,
    /// Batch size one up.
    BatchSizeUp,
    /// Batch size one down.
    BatchSizeDown,
    /// Type a batch size.
    TypeBatchSize,
    /// Batch delay 10 ms up.
    DelayUp,
    /// Batch delay 10 ms down.
    DelayDown,
    /// Type a batch delay.
    TypeDelay,
    /// Select the lane above.
    LaneUp,
    /// Select the lane below.
    LaneDown,
    /// Selected lane's max batch one up.
    LaneMaxUp,
    /// Selected lane's max batch one down.
    LaneMaxDown,
    /// Type the selected lane's max batch.
    TypeLaneMax,
    /// Selected lane's window 100 ms up.
    WindowUp,
    /// Selected lane's window 100 ms down.
    WindowDown,
    /// Type the selected lane's window.
    TypeWindow,
    /// Pause or resume dispatch.
    TogglePause,
    /// Submit a burst of demo prompts.
    Burst,
    /// Switch the pane the scroll keys move.
    SwitchFocus,
    /// Scroll up a page.
    ScrollUp,
    /// Scroll down a page.
    ScrollDown,
    /// Back to the newest lines.
    ScrollEnd,
}

/// One binding: the keys, how help names them, what they do.
pub struct Binding {
    /// Keys that trigger it.
    pub keys: &'static [KeyCode],
    /// As help shows them.
    pub label: &'static str,
    /// What it does.
    pub action: Action,
    /// Help text.
    pub help: &'static str,
}

/// Every binding, in help order.
#[rustfmt::skip]
pub const BINDINGS: &[Binding] = &[
    Binding { keys: &[KeyCode::Char('+'), KeyCode::Char('=')], label: "+ / -", action: Action::BatchSizeUp, help: "batch size up / down by 1" },
    Binding { keys: &[KeyCode::Char('-'), KeyCode::Char('_')], label: "", action: Action::BatchSizeDown, help: "" },
    Binding { keys: &[KeyCode::Char('b')], label: "b", action: Action::TypeBatchSize, help: "type a batch size" },
    Binding { keys: &[KeyCode::Char(']')], label: "] / [", action: Action::DelayUp, help: "batch delay up / down by 10 ms" },
    Binding { keys: &[KeyCode::Char('[')], label: "", action: Action::DelayDown, help: "" },
    Binding { keys: &[KeyCode::Char('d')], label: "d", action: Action::TypeDelay, help: "type a batch delay (ms)" },
    Binding { keys: &[KeyCode::Up, KeyCode::Char('k')], label: "↑ / ↓", action: Action::LaneUp, help: "select a lane" },
    Binding { keys: &[KeyCode::Down, KeyCode::Char('j')], label: "", action: Action::LaneDown, help: "" },
    Binding { keys: &[KeyCode::Char('>')], label: "> / <", action: Action::LaneMaxUp, help: "selected lane: max batch up / down by 1" },
    Binding { keys: &[KeyCode::Char('<')], label: "", action: Action::LaneMaxDown, help: "" },
    Binding { keys: &[KeyCode::Char('m')], label: "m", action: Action::TypeLaneMax, help: "selected lane: type a max batch" },
    Binding { keys: &[KeyCode::Char('}')], label: "} / {", action: Action::WindowUp, help: "selected lane: window up / down by 100 ms" },
    Binding { keys: &[KeyCode::Char('{')], label: "", action: Action::WindowDown, help: "" },
    Binding { keys: &[KeyCode::Char('w')], label: "w", action: Action::TypeWindow, help: "selected lane: type a window (ms)" },
    Binding { keys: &[KeyCode::Char('p'), KeyCode::Char(' ')], label: "p, space", action: Action::TogglePause, help: "pause / resume dispatch" },
    Binding { keys: &[KeyCode::Char('s')], label: "s", action: Action::Burst, help: "submit a burst of demo prompts" },
    Binding { keys: &[KeyCode::Tab], label: "tab", action: Action::SwitchFocus, help: "scroll failures or log" },
    Binding { keys: &[KeyCode::PageUp], label: "PgUp / PgDn", action: Action::ScrollUp, help: "scroll a page" },
    Binding { keys: &[KeyCode::PageDown], label: "", action: Action::ScrollDown, help: "" },
    Binding { keys: &[KeyCode::End], label: "End", action: Action::ScrollEnd, help: "back to the newest lines" },
    Binding { keys: &[KeyCode::Char('?'), KeyCode::F(1)], label: "?", action: Action::Help, help: "this help" },
    Binding { keys: &[KeyCode::Char('q')], label: "q, Ctrl-C", action: Action::Quit, help: "quit (drains first)" },
];

/// The action a key triggers in normal mode.
pub fn action_for(key: KeyEvent) -> Option<Action> {
    if key.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(key.code, KeyCode::Char('c')).then_some(Action::Quit);
    }
    BINDINGS.iter().find(|b| b.keys.contains(&key.code)).map(|b| b.action)
}
