//! Where each pane goes, from the terminal size alone. Wide terminals put batches beside
//! upstreams and failures beside the log; narrow ones stack them. Every rectangle lies inside the
//! frame and none overlap (ratatui's layout splits, never overlays), down to 80×24 and below.

use ratatui::layout::{Constraint, Direction, Layout, Rect};

/// Narrower than this: panes are stacked.
pub const WIDE: u16 = 140;
/// Smaller than this: only a "too small" note is drawn.
pub const MIN_WIDTH: u16 = 40;
/// Smaller than this: only a "too small" note is drawn.
pub const MIN_HEIGHT: u16 = 12;

/// The panes' rectangles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// Top line.
    pub header: Rect,
    /// Lanes.
    pub lanes: Rect,
    /// Recent batches.
    pub batches: Rect,
    /// Upstreams.
    pub upstreams: Rect,
    /// Failures.
    pub failures: Rect,
    /// Log events.
    pub log: Rect,
    /// Bottom line.
    pub footer: Rect,
}

/// Splits `area` for `lanes` lanes and `upstreams` upstreams; `None` when it is too small.
pub fn areas(area: Rect, lanes: usize, upstreams: usize) -> Option<Areas> {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    let lanes_h = (lanes.max(1) as u16).saturating_add(3);
    let [header, body, footer] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0), Constraint::Length(1)]).areas(area);
    if area.width >= WIDE {
        let [lanes, middle, bottom] =
            Layout::vertical([Constraint::Length(lanes_h), Constraint::Min(8), Constraint::Percentage(35)])
                .areas(body);
        let [batches, upstreams] = split(middle, 45);
        let [failures, log] = split(bottom, 40);
        Some(Areas { header, lanes, batches, upstreams, failures, log, footer })
    } else {
        // Upstreams: borders, a header row, and two rows each (status, last error).
        let upstreams_h = (upstreams.max(1) as u16).saturating_mul(2).saturating_add(3);
        let [lanes, batches, upstreams, bottom] = Layout::vertical([
            Constraint::Length(lanes_h),
            Constraint::Min(5),
            Constraint::Length(upstreams_h.min(body.height / 4 + 1)),
            Constraint::Percentage(25),
        ])
        .areas(body);
        let [failures, log] = split(bottom, 45);
        Some(Areas { header, lanes, batches, upstreams, failures, log, footer })
    }
}

fn split(area: Rect, left_percent: u16) -> [Rect; 2] {
    Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(left_percent), Constraint::Min(0)])
        .areas(area)
}

/// A rectangle of at most `width`×`height` centred in `area` (the help overlay).
pub fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(a: Rect, b: Rect) -> bool {
        a.intersects(b) && !a.is_empty() && !b.is_empty()
    }

    #[test]
    fn panes_never_overlap_and_stay_inside() {
        for (w, h) in [(80, 24), (200, 60), (120, 30), (100, 40), (40, 12), (300, 100)] {
            let area = Rect::new(0, 0, w, h);
            let a = areas(area, 4, 1).unwrap_or_else(|| panic!("{w}x{h} too small"));
            let all = [a.header, a.lanes, a.batches, a.upstreams, a.failures, a.log, a.footer];
            for (i, x) in all.iter().enumerate() {
                assert!(area.contains(x.as_position()) || x.is_empty(), "{w}x{h}: {x:?}");
                assert!(x.right() <= area.right() && x.bottom() <= area.bottom(), "{w}x{h}: {x:?}");
                for y in &all[i + 1..] {
                    assert!(!overlap(*x, *y), "{w}x{h}: {x:?} overlaps {y:?}");
                }
            }
        }
        assert!(areas(Rect::new(0, 0, 30, 10), 4, 1).is_none());
    }
}
