//! One function per pane, each drawing from the [`Dashboard`](super::state::Dashboard) only.

pub mod batches;
pub mod events;
pub mod footer;
pub mod header;
pub mod help;
pub mod lanes;
pub mod upstreams;

use std::time::Duration;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Block, BorderType, Borders};

/// A pane's frame; the focused one is highlighted.
pub fn block(title: String, focused: bool) -> Block<'static> {
    let style = if focused { Style::new().fg(Color::Yellow) } else { Style::new().fg(Color::DarkGray) };
    Block::new()
        .borders(Borders::ALL)
        .border_type(BorderType::Rounded)
        .border_style(style)
        .title(Span::styled(title, Style::new().add_modifier(Modifier::BOLD)))
}

/// `812 ms`, `4.2 s`, `0.3 ms`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 10.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// `used/limit`, `used/∞`.
pub fn used_of(used: u64, limit: Option<u64>) -> String {
    match limit {
        Some(limit) => format!("{used}/{limit}"),
        None => format!("{used}/∞"),
    }
}

/// A rate with sensible precision.
pub fn rate(per_second: f64) -> String {
    if per_second >= 100.0 { format!("{per_second:.0}") } else { format!("{per_second:.1}") }
}
