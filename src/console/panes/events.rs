//! Failures and the last log events: newest at the bottom, scrollable (Tab picks the pane,
//! PgUp/PgDn scroll, End returns to the newest).

use std::collections::VecDeque;

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::Paragraph;

use super::block;
use crate::console::state::{Dashboard, Focus, Line};

/// Draws the failures pane.
pub fn draw_failures(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let focused = state.focus == Focus::Failures;
    draw_lines(frame, area, "Failures", &state.failures, state.failures_scroll, focused);
}

/// Draws the log pane.
pub fn draw_log(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let focused = state.focus == Focus::Log;
    draw_lines(frame, area, "Log", &state.log, state.log_scroll, focused);
}

fn draw_lines(
    frame: &mut Frame,
    area: Rect,
    name: &str,
    lines: &VecDeque<Line>,
    scroll: usize,
    focused: bool,
) {
    let mut title = format!(" {name} ({}) ", lines.len());
    if scroll > 0 {
        title.push_str(&format!("↑{scroll} "));
    }
    let pane = block(title, focused);
    let inner = pane.inner(area);
    frame.render_widget(pane, area);
    let visible = usize::from(inner.height);
    let end = lines.len().saturating_sub(scroll);
    let start = end.saturating_sub(visible);
    let shown: Vec<TextLine> = lines
        .range(start..end)
        .map(|line| {
            let style = if line.severe { Style::new().fg(Color::Red) } else { Style::new() };
            TextLine::from(vec![
                Span::styled(format!("{} ", line.time), Style::new().fg(Color::DarkGray)),
                Span::styled(line.text.clone(), style),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(shown), inner);
}
