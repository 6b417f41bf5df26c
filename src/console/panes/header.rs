//! The top line: where the engine is, the global batching settings, dispatch state and totals.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;

use crate::console::state::{Dashboard, Link};

/// Draws the header.
pub fn draw(frame: &mut Frame, area: Rect, state: &Dashboard) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let sep = Span::styled(" │ ", Style::new().fg(Color::DarkGray));
    let mut spans = vec![Span::styled(" ferry ", bold.fg(Color::Black).bg(Color::Cyan)), Span::raw(" ")];
    // Narrow terminals get the short words, so the state fits on the line.
    let wide = area.width >= 130;
    let source = if wide {
        state.source.clone()
    } else {
        state.source.replace(" · API ", " ").replace("http://", "")
    };
    spans.push(Span::raw(source));
    if let Link::Down(why) = &state.link {
        spans.push(sep.clone());
        spans.push(Span::styled(format!("DISCONNECTED: {why}"), bold.fg(Color::Red)));
    }
    // First, so a narrow terminal still shows it: an actor kept panicking, no new work is taken.
    if !state.failed_actors.is_empty() {
        spans.push(sep.clone());
        let failed = format!("FAILED: {} (no new work)", state.failed_actors.join(", "));
        spans.push(Span::styled(failed, bold.fg(Color::White).bg(Color::Red)));
    }
    spans.push(sep.clone());
    match &state.config {
        Some(config) => {
            spans.push(Span::raw(if wide { "batch size " } else { "size " }));
            spans.push(Span::styled(config.batch_size.to_string(), bold));
            spans.push(sep.clone());
            spans.push(Span::raw("delay "));
            let delay = if wide {
                format!("{} ms", config.batch_delay_ms)
            } else {
                format!("{}ms", config.batch_delay_ms)
            };
            spans.push(Span::styled(delay, bold));
            spans.push(sep.clone());
            if config.paused {
                spans.push(Span::styled("PAUSED", bold.fg(Color::Black).bg(Color::Yellow)));
            } else {
                spans.push(Span::styled("running", Style::new().fg(Color::Green)));
            }
        }
        None => spans.push(Span::raw("configuration …")),
    }
    spans.push(sep.clone());
    spans.push(Span::raw(if wide {
        format!("ok {} · failed {} · batches {}", state.items_ok, state.items_failed, state.batch_count)
    } else {
        format!("ok {} failed {}", state.items_ok, state.items_failed)
    }));
    if state.restarts > 0 {
        spans.push(sep);
        spans.push(Span::styled(format!("restarts {}", state.restarts), Style::new().fg(Color::Red)));
    }

    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}
