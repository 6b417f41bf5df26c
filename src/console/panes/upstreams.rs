//! Upstreams: calls in flight of the concurrency (` a` when it is `auto`), RPM and TPM used
//! against their limits, 429s and retries, state (ok, backing off until …, cooling down until …),
//! the last error, and for combined calls how many there were, how many replies left items
//! unanswered and how many items were sent again alone.

use std::time::SystemTime;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Table};

use super::{block, duration, used_of};
use crate::console::state::{Dashboard, UpstreamRow, clock};
use crate::engine::UpstreamState;

/// Draws the upstreams pane.
pub fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let pane = block(" Upstreams ".into(), false);
    let inner = pane.inner(area);
    frame.render_widget(pane, area);
    let header = Row::new(["name", "state", "in flight", "RPM", "TPM", "429s", "retries", "failed"])
        .style(Style::new().fg(Color::DarkGray));
    // Width left for the state column once the fixed ones are placed.
    let compact = inner.width.saturating_sub(FIXED) < 40;
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    for (name, row) in &state.upstreams {
        let s = &row.status;
        let (text, colour) = state_text(row, state.wall, compact);
        rows.push(Row::new(vec![
            Cell::from(name.clone()),
            Cell::from(text).style(Style::new().fg(colour)),
            // `a`: the concurrency is searched for (`concurrency = "auto"`).
            Cell::from(format!(
                "{}/{}{}",
                s.in_flight,
                s.concurrency,
                if s.concurrency_auto { " a" } else { "" }
            )),
            Cell::from(used_of(s.limits.rpm_used, s.limits.rpm_limit)),
            Cell::from(used_of(s.limits.tpm_used, s.limits.tpm_limit)),
            Cell::from(s.rate_limited.to_string()),
            Cell::from(s.retries.to_string()),
            Cell::from(s.failed.to_string()),
        ]));
        let (mut text, style) = match &s.last_error {
            Some(error) => (format!("{name} last error: {error}"), Style::new().fg(Color::Red)),
            None => (format!("{name} last error: none"), Style::new().fg(Color::DarkGray)),
        };
        for f in &s.fidelity {
            text = format!("{name} fidelity {}/{} {}/{} · {text}", f.lane, f.model, f.agreed, f.samples);
        }
        if s.combined_calls > 0 {
            text = format!(
                "{name} combined calls {}, split failures {}, re-sent alone {} · {text}",
                s.combined_calls, s.split_failures, s.resent_alone
            );
        }
        errors.push(Line::styled(text, style));
    }
    let widths = [
        Constraint::Length(8),
        Constraint::Min(10),
        Constraint::Length(9),
        Constraint::Length(10),
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(7),
        Constraint::Length(6),
    ];
    let table_h = (rows.len() as u16 + 1).min(inner.height);
    let [table, below] = Layout::vertical([Constraint::Length(table_h), Constraint::Min(0)]).areas(inner);
    frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), table);
    frame.render_widget(Paragraph::new(errors), below);
}

/// Columns other than the state, with their spacing.
const FIXED: u16 = 8 + 9 + 10 + 12 + 5 + 7 + 6 + 7;

/// The state: `backing off until 12:00:09 (5.0 s left)`, or `backoff 5.0 s` when `compact`.
fn state_text(row: &UpstreamRow, wall: SystemTime, compact: bool) -> (String, Color) {
    let until = row.until.unwrap_or(wall);
    let remaining = duration(until.duration_since(wall).unwrap_or_default());
    let (long, short, colour) = match row.status.state {
        UpstreamState::Ok => return ("ok".into(), Color::Green),
        UpstreamState::BackingOff { .. } => ("backing off", "backoff", Color::Yellow),
        UpstreamState::CoolingDown { .. } => ("cooling down", "cooldown", Color::Red),
        UpstreamState::Exhausted { .. } => ("exhausted", "spent", Color::Red),
    };
    if compact {
        (format!("{short} {remaining}"), colour)
    } else {
        (format!("{long} until {} ({remaining} left)", clock(until)), colour)
    }
}
