//! Lanes: one row each — depth now (gauge) and over the last minutes (sparkline, one sample a
//! second), window, max batch, delay, how long the oldest item has waited, and how many owners
//! have items waiting (with the deepest owner's share of the depth).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;
use ratatui::widgets::{Gauge, Paragraph, Sparkline};

use super::{block, duration};
use crate::console::state::{Dashboard, LaneState};

/// Width of the name, depth and settings columns together.
const FIXED: u16 = 10 + 7 + 8 + 6 + 8 + 9;
/// Width of the owners column, shown when the pane is at least [`OWNERS_FROM`] wide.
const OWNERS: u16 = 10;
const OWNERS_FROM: u16 = 100;

/// Draws the lanes pane.
pub fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let pane = block(" Lanes  ↑↓ select ".into(), false);
    let inner = pane.inner(area);
    frame.render_widget(pane, area);
    if inner.height == 0 {
        return;
    }
    let owners_w = if inner.width >= OWNERS_FROM { OWNERS } else { 0 };
    let flexible = inner.width.saturating_sub(FIXED + owners_w);
    let gauge_w = (flexible / 4).max(4).min(flexible);
    let spark_w = flexible - gauge_w;
    let widths = [
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(gauge_w),
        Constraint::Length(spark_w),
        Constraint::Length(8),
        Constraint::Length(6),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(owners_w),
    ];
    let dim = Style::new().fg(Color::DarkGray);
    let mut rows = inner.rows();
    if let Some(row) = rows.next() {
        let cells = Layout::horizontal(widths).split(row);
        let titles = [
            "  lane",
            "  depth",
            " queue",
            " depth, last minutes",
            "  window",
            "  max",
            "  delay",
            "  oldest",
            "   owners",
        ];
        for (cell, title) in cells.iter().zip(titles).filter(|(cell, _)| cell.width > 0) {
            frame.render_widget(Paragraph::new(Span::styled(title, dim)), *cell);
        }
    }
    let order = state.lane_order();
    for (index, (name, row)) in order.iter().zip(rows).enumerate() {
        let lane = state.lanes.get(name).cloned().unwrap_or_default();
        let cells = Layout::horizontal(widths).split(row);
        let selected = index == state.selected;
        let name_style = if selected {
            Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        let marker = if selected { "▶ " } else { "  " };
        frame.render_widget(Paragraph::new(Span::styled(format!("{marker}{name:<8}"), name_style)), cells[0]);
        frame.render_widget(Paragraph::new(format!("{:>6} ", lane.depth)), cells[1]);
        let scale = scale(&lane);
        let ratio = (lane.depth as f64 / scale as f64).clamp(0.0, 1.0);
        let gauge = Gauge::default()
            .gauge_style(Style::new().fg(gauge_colour(ratio)).bg(Color::Black))
            .ratio(ratio)
            .label("");
        frame.render_widget(gauge, pad(cells[2]));
        let take = usize::from(cells[3].width.saturating_sub(1));
        let skip = lane.history.len().saturating_sub(take);
        let data: Vec<u64> = lane.history.iter().skip(skip).copied().collect();
        let spark = Sparkline::default().data(&data).max(scale).style(Style::new().fg(Color::Cyan));
        frame.render_widget(spark, pad(cells[3]));
        let settings = state.config.as_ref().and_then(|c| c.lanes.get(name));
        let (window, max, delay) = match settings {
            Some(s) => (format!("{} ms", s.window_ms), s.max_batch.to_string(), format!("{} ms", s.delay_ms)),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let oldest = state.oldest_wait(&lane);
        let oldest = if lane.depth == 0 { "-".to_string() } else { duration(oldest) };
        frame.render_widget(Paragraph::new(format!("{window:>8}")), cells[4]);
        frame.render_widget(Paragraph::new(format!("{max:>6}")), cells[5]);
        frame.render_widget(Paragraph::new(format!("{delay:>8}")), cells[6]);
        frame.render_widget(Paragraph::new(format!("{oldest:>9}")), cells[7]);
        if owners_w > 0 {
            frame.render_widget(Paragraph::new(format!("{:>10}", owners(&lane))), cells[8]);
        }
    }
}

/// `-` for an empty lane, the owner count, and past one owner the deepest owner's share:
/// `3 · 97%` says one owner holds nearly all of the lane (the others still take turns).
fn owners(lane: &LaneState) -> String {
    match lane.owners {
        0 => "-".into(),
        1 => "1".into(),
        n => format!("{n} · {}%", lane.top_owner_depth * 100 / lane.depth.max(1)),
    }
}

/// What a full gauge and a full sparkline bar mean: the most seen lately, at least 10.
fn scale(lane: &LaneState) -> u64 {
    lane.history.iter().copied().max().unwrap_or(0).max(lane.depth as u64).max(10)
}

fn gauge_colour(ratio: f64) -> Color {
    if ratio > 0.8 {
        Color::Red
    } else if ratio > 0.5 {
        Color::Yellow
    } else {
        Color::Green
    }
}

/// The cell less one column on the left, so bars do not touch the column before.
fn pad(cell: Rect) -> Rect {
    Rect { x: cell.x.saturating_add(1), width: cell.width.saturating_sub(1), ..cell }
}
