//! The whole screen from the state: the layout picks the rectangles, each pane draws itself.

use ratatui::Frame;
use ratatui::style::{Color, Style};
use ratatui::widgets::{Paragraph, Wrap};

use super::layout::{MIN_HEIGHT, MIN_WIDTH, areas};
use super::panes::{batches, events, footer, header, help, lanes, upstreams};
use super::state::{Dashboard, Mode};

/// Draws the dashboard; reads `state` only.
pub fn draw(frame: &mut Frame, state: &Dashboard) {
    let area = frame.area();
    let Some(a) = areas(area, state.lane_order().len(), state.upstreams.len()) else {
        let note = format!(
            "ferry console: the terminal is too small ({}×{}); it needs {MIN_WIDTH}×{MIN_HEIGHT}. q quits.",
            area.width, area.height
        );
        frame.render_widget(
            Paragraph::new(note).style(Style::new().fg(Color::Yellow)).wrap(Wrap { trim: true }),
            area,
        );
        return;
    };
    header::draw(frame, a.header, state);
    lanes::draw(frame, a.lanes, state);
    batches::draw(frame, a.batches, state);
    upstreams::draw(frame, a.upstreams, state);
    events::draw_failures(frame, a.failures, state);
    events::draw_log(frame, a.log, state);
    footer::draw(frame, a.footer, state);
    if state.mode == Mode::Help {
        help::draw(frame, area);
    }
}
