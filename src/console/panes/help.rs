//! The `?` overlay: every key binding, from the same table input handling reads.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph};

use super::block;
use crate::console::keys::BINDINGS;
use crate::console::layout::centred;

/// Draws the help over the whole dashboard.
pub fn draw(frame: &mut Frame, area: Rect) {
    let key_style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = BINDINGS
        .iter()
        .filter(|b| !b.label.is_empty())
        .map(|b| Line::from(vec![Span::styled(format!(" {:<15}", b.label), key_style), Span::raw(b.help)]))
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        " Typing a value: digits, Enter applies, Esc cancels.",
        Style::new().fg(Color::DarkGray),
    ));
    lines.push(Line::styled(" Any key closes this help.", Style::new().fg(Color::DarkGray)));
    let height = lines.len() as u16 + 2;
    let popup = centred(area, 64, height);
    frame.render_widget(Clear, popup);
    frame.render_widget(Paragraph::new(lines).block(block(" Keys ".into(), true)), popup);
}
