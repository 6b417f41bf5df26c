//! The bottom line: the number being typed, the last command's result, or the main keys.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::console::state::{Dashboard, Mode};

/// The key hints shown when nothing else is.
pub const HINTS: &str =
    "q quit · ? help · +/- batch size · [/] delay · ↑↓ lane · </> max · {/} window · p pause · s burst";

/// Draws the footer.
pub fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let line = if state.quitting {
        Line::from(Span::styled(" quitting: draining queued and in-flight prompts …", bold.fg(Color::Yellow)))
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
