//! (placeholder)
use std::time::Duration;
use tokio::time::Instant;
/// x
#[derive(Debug, Clone)]
pub struct LaneView {
    pub rank: u32,
    pub len: usize,
    pub oldest: Option<Instant>,
    pub window: Duration,
    pub max_batch: usize,
    pub delay: Duration,
    pub last_batch: Option<Instant>,
    pub cost_per_batch_is_items: bool,
}
/// x
pub fn ready_at(lane: &LaneView) -> Option<Instant> {
    let oldest = lane.oldest?;
    if lane.len == 0 {
        return None;
    }
    let by_content = if lane.len >= lane.max_batch { oldest } else { oldest + lane.window };
    Some(match lane.last_batch {
        Some(t) => by_content.max(t + lane.delay),
        None => by_content,
    })
}
/// x
pub fn pick(lanes: &[LaneView], now: Instant, aging: Duration) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, l) in lanes.iter().enumerate() {
        let Some(r) = ready_at(l) else { continue };
        if r > now {
            continue;
        }
        let waited = l.oldest.map(|o| now.saturating_duration_since(o)).unwrap_or_default();
        let eff =
            l.rank as f64 + if aging.is_zero() { 0.0 } else { waited.as_secs_f64() / aging.as_secs_f64() };
        if best.is_none_or(|(_, b)| eff > b) {
            best = Some((i, eff));
        }
    }
    best.map(|(i, _)| i)
}
/// x
pub fn next_wake(lanes: &[LaneView], now: Instant) -> Option<Instant> {
    lanes.iter().filter_map(ready_at).filter(|t| *t > now).min()
}
