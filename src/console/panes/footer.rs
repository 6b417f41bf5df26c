//! The bottom line: the number being typed, the last command's result, or the main keys.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::console::state::{Dashboard, Drain, Mode};

/// The key hints shown when nothing else is.
pub const HINTS: &str =
    "q quit · ? help · +/- batch size · [/] delay · ↑↓ lane · </> max · {/} window · p pause · s burst";

/// Draws the footer.
pub fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let line = if let Some(drain) = state.drain {
        let queued: usize = state.lanes.values().map(|l| l.depth).sum();
        let in_flight: usize = state.upstreams.values().map(|u| u.status.in_flight).sum();
        let (text, hint) = match drain {
            Drain::Starting => {
                (format!(" quitting: answering {queued} queued and {in_flight} in flight …"), "")
            }
            Drain::Waiting => (
                format!(" quitting: answering {queued} queued and {in_flight} in flight …"),
                "  q again: stop now (the rest is answered \"shutting down\"; batch jobs go on at the next start)",
            ),
            Drain::CuttingOff => (" stopping now: cutting off what is left …".to_string(), ""),
        };
        Line::from(vec![
            Span::styled(text, bold.fg(Color::Yellow)),
            Span::styled(hint, Style::new().fg(Color::DarkGray)),
        ])
    } else if let Mode::Input { field, buffer } = &state.mode {
        Line::from(vec![
            Span::styled(format!(" new {}: ", field.label()), bold),
            Span::styled(format!("{buffer}▏"), bold.fg(Color::Cyan)),
            Span::styled("  Enter apply · Esc cancel", Style::new().fg(Color::DarkGray)),
        ])
    } else if let Some((text, failed)) = &state.status {
        let colour = if *failed { Color::Red } else { Color::Green };
        Line::from(vec![
            Span::styled(format!(" {text}"), Style::new().fg(colour)),
            Span::styled("   ? help", Style::new().fg(Color::DarkGray)),
        ])
    } else {
        Line::from(Span::styled(format!(" {HINTS}"), Style::new().fg(Color::DarkGray)))
    };
    frame.render_widget(Paragraph::new(line), area);
}
