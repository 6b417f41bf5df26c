//! `GET /health`: liveness and a summary (seed 002) — queue depth per lane and each upstream's
//! state. Open to everyone, keys or not, so probes need no secret; it shows no configuration.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::engine::UpstreamState;

/// Registers the route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)));
}

/// The reply.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `"ok"`, or `"degraded"` when an actor kept panicking and was stopped (ferry then takes no
    /// new work; see `failed_actors`) or an upstream's daily budget is spent (its work waits for
    /// another upstream or for the budget to come back).
    pub status: &'static str,
    /// The actors declared failed, e.g. `["pool"]`; empty when all is well.
    pub failed_actors: Vec<String>,
    /// Whether dispatch is paused (items queue but no batch goes out).
    pub paused: bool,
    /// Per lane: items waiting.
    pub lanes: BTreeMap<String, LaneHealth>,
    /// Per upstream: its state.
    pub upstreams: BTreeMap<String, UpstreamHealth>,
}

/// One lane in [`Health`].
#[derive(Debug, Serialize)]
pub struct LaneHealth {
    /// Items waiting in the lane.
    pub depth: usize,
}

/// One upstream in [`Health`].
#[derive(Debug, Serialize)]
pub struct UpstreamHealth {
    /// `ok`, `backing_off` (rate-limited), `cooling_down` (failing), `exhausted` (its daily
    /// budget is spent) or `unknown` (no report yet).
    pub state: &'static str,
    /// Milliseconds until a backing-off, cooling-down or exhausted upstream is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub for_ms: Option<u64>,
    /// When an exhausted upstream's budget comes back (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The limit an exhausted upstream has spent (`requests per day`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
    /// Calls running now.
    pub in_flight: usize,
}

async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let snapshot = state.engine.snapshot().await?;
    let lanes = state
        .engine
        .lanes()
        .into_iter()
        .map(|lane| {
            let depth = snapshot.lane_depths.get(&lane).copied().unwrap_or(0);
            (lane, LaneHealth { depth })
        })
        .collect();
    let upstreams: BTreeMap<String, UpstreamHealth> = state
        .config
        .upstreams
        .iter()
        .map(|upstream| {
            let health = match snapshot.upstreams.get(&upstream.name) {
                None => {
                    UpstreamHealth { state: "unknown", for_ms: None, until: None, limit: None, in_flight: 0 }
                }
                Some(status) => {
                    let (state, for_ms, until, limit) = match status.state {
                        UpstreamState::Ok => ("ok", None, None, None),
                        UpstreamState::BackingOff { for_ms } => ("backing_off", Some(for_ms), None, None),
                        UpstreamState::CoolingDown { for_ms } => ("cooling_down", Some(for_ms), None, None),
                        UpstreamState::Exhausted { for_ms, until, limit } => (
                            "exhausted",
                            Some(for_ms),
                            Some(super::priority::rfc3339(until)),
                            Some(limit.describe()),
                        ),
                    };
                    UpstreamHealth { state, for_ms, until, limit, in_flight: status.in_flight }
                }
            };
            (upstream.name.clone(), health)
        })
        .collect();
    let failed_actors = state.engine.failed_actors();
    let exhausted = upstreams.values().any(|u: &UpstreamHealth| u.state == "exhausted");
    let status = if failed_actors.is_empty() && !exhausted { "ok" } else { "degraded" };
    Ok(HttpResponse::Ok().json(Health { status, failed_actors, paused: snapshot.paused, lanes, upstreams }))
}
