//! Batches: p50/p95 batch time, items/s and tokens/s, then the most recent batches, newest first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{block, duration, rate};
use crate::console::state::{Dashboard, short_id};

/// Draws the batches pane.
pub fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let pane = block(" Batches ".into(), false);
    let inner = pane.inner(area);
    frame.render_widget(pane, area);
    if inner.height == 0 {
        return;
    }
    let [summary, table] =
        ratatui::layout::Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    let (p50, p95) = state
        .batch_percentiles()
        .map_or(("-".to_string(), "-".to_string()), |(a, b)| (duration(a), duration(b)));
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let line = Line::from(vec![
        Span::raw("p50 "),
        Span::styled(p50, bold),
        Span::raw(" · p95 "),
        Span::styled(p95, bold),
        Span::raw(" · "),
        Span::styled(rate(state.items_rate.per_second(state.now)), bold),
        Span::raw(" items/s · "),
        Span::styled(rate(state.tokens_rate.per_second(state.now)), bold),
        Span::raw(" tokens/s · in flight "),
        Span::styled(state.batches_in_flight.to_string(), bold),
    ]);
    frame.render_widget(Paragraph::new(line), summary);
    let header = Row::new(["id", "lane", "size", "mode", "time", "ok", "failed"])
        .style(Style::new().fg(Color::DarkGray));
    let shown = usize::from(table.height.saturating_sub(1));
    let rows = state.batches.iter().rev().take(shown).map(|b| {
        let id = b.id.to_string();
        let failed = if b.failed > 0 {
            Cell::from(b.failed.to_string()).style(Style::new().fg(Color::Red))
        } else {
            Cell::from("0")
        };
        Row::new(vec![
            Cell::from(short_id(&id).to_string()),
            Cell::from(b.lane.to_string()),
            Cell::from(b.size.to_string()),
            Cell::from(b.mode.to_string()),
            Cell::from(duration(b.duration)),
            Cell::from(b.ok.to_string()),
            failed,
        ])
    });
    let widths = [
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(5),
        Constraint::Length(6),
    ];
    frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), table);
}
