//! Live changes: batch size, batch delay, a lane's settings, pause and resume, an upstream's
//! key (and, in test builds, fault injection). Each is checked against the engine's bounds
//! (`control.rs`), applied to the supervisor's copy of the config, pushed to the lanes and the
//! former (which apply it from the next batch on), and logged as `event=config_changed`.

use actix::prelude::*;

use super::Supervisor;
use crate::engine::batch_former::{SetPaused, UpdateLaneView};
use crate::engine::client;
#[cfg(feature = "fault-injection")]
use crate::engine::control::FaultTarget;
use crate::engine::control::{
    ControlError, LanePatch, MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE, MAX_LATENCY_MS, RuntimeConfig, UpstreamView,
    in_range,
};
use crate::engine::lane::UpdateLane;
use crate::engine::metrics::{MetricsEvent, Publish};
use crate::providers;

impl Supervisor {
    pub(crate) fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            batch_size: self.config.batching.batch_size,
            batch_delay_ms: self.config.batching.batch_delay_ms,
            paused: self.paused,
            lanes: self
                .config
                .lanes
                .iter()
                .map(|(name, lane)| (name.clone(), lane.effective(&self.config.batching)))
                .collect(),
            upstreams: self
                .config
                .upstreams
                .iter()
                .map(|u| UpstreamView {
                    name: u.name.clone(),
                    provider: u.provider,
                    base_url: u.base_url.clone(),
                    models: u.models.clone(),
                    rpm: u.rpm,
                    tpm: u.tpm,
                    rpd: u.rpd,
                    concurrency: u.concurrency,
                    structured_output: u.structured_output,
                    api_key_env: u.api_key_env.clone(),
                })
                .collect(),
        }
    }

    /// Sends every lane its effective settings (after a global or lane change).
    fn push_lane_settings(&self) {
        for (index, (addr, name)) in self.lanes.iter().zip(&self.lane_names).enumerate() {
            if let Some(lane) = self.config.lanes.get(name.as_ref()) {
                let settings = lane.effective(&self.config.batching);
                addr.do_send(UpdateLane(settings.clone()));
                self.former.do_send(UpdateLaneView { index, settings });
            }
        }
    }

    fn changed(&self, change: String) {
        tracing::info!(event = "config_changed", change = %change);
        self.metrics.do_send(Publish(MetricsEvent::ConfigChanged { change }));
    }
}

/// Set `[batching] batch_size` live.
#[derive(Message)]
#[rtype(result = "Result<RuntimeConfig, ControlError>")]
pub(crate) struct SetBatchSize(pub usize);

/// Set `[batching] batch_delay_ms` live.
#[derive(Message)]
#[rtype(result = "Result<RuntimeConfig, ControlError>")]
pub(crate) struct SetBatchDelay(pub u64);

/// Change one lane live.
#[derive(Message)]
#[rtype(result = "Result<RuntimeConfig, ControlError>")]
pub(crate) struct PatchLane(pub String, pub LanePatch);

/// Pause (true) or resume (false) dispatch.
#[derive(Message)]
#[rtype(result = "RuntimeConfig")]
pub(crate) struct Pause(pub bool);

/// The live configuration.
#[derive(Message)]
#[rtype(result = "RuntimeConfig")]
pub(crate) struct GetConfig;

/// Give an upstream a new API key (the first upstream when none is named).
#[derive(Message)]
#[rtype(result = "Result<(), ControlError>")]
pub(crate) struct SetUpstreamKey {
    pub upstream: Option<String>,
    pub key: String,
}

/// Fault injection.
#[cfg(feature = "fault-injection")]
#[derive(Message)]
#[rtype(result = "Result<(), ControlError>")]
pub(crate) struct InjectPanic(pub FaultTarget);

impl Handler<SetUpstreamKey> for Supervisor {
    type Result = Result<(), ControlError>;
    fn handle(&mut self, msg: SetUpstreamKey, _: &mut Context<Self>) -> Self::Result {
        let index = match &msg.upstream {
            Some(name) => self
                .config
                .upstreams
                .iter()
                .position(|u| u.name == *name)
                .ok_or_else(|| ControlError::UnknownUpstream(name.clone()))?,
            None => 0,
        };
        let upstream =
            self.config.upstreams.get(index).ok_or(ControlError::UnknownUpstream("(default)".into()))?;
        let provider = providers::build(upstream, Some(msg.key))
            .map_err(|e| ControlError::Invalid { field: "api_key", message: e.to_string() })?;
        self.clients[index].do_send(client::ReplaceProvider(provider));
        // The key itself is never logged.
        self.changed(format!("upstreams.{}.api_key=(replaced)", upstream.name));
        Ok(())
    }
}

impl Handler<SetBatchSize> for Supervisor {
    type Result = Result<RuntimeConfig, ControlError>;
    fn handle(&mut self, msg: SetBatchSize, _: &mut Context<Self>) -> Self::Result {
        in_range("size", msg.0 as u64, 1, MAX_BATCH_SIZE)?;
        self.config.batching.batch_size = msg.0;
        self.push_lane_settings();
        self.changed(format!("batch_size={}", msg.0));
        Ok(self.runtime_config())
    }
}

impl Handler<SetBatchDelay> for Supervisor {
    type Result = Result<RuntimeConfig, ControlError>;
    fn handle(&mut self, msg: SetBatchDelay, _: &mut Context<Self>) -> Self::Result {
        in_range("delay_ms", msg.0, 0, MAX_BATCH_DELAY_MS)?;
        self.config.batching.batch_delay_ms = msg.0;
        self.push_lane_settings();
        self.changed(format!("batch_delay_ms={}", msg.0));
        Ok(self.runtime_config())
    }
}

impl Handler<PatchLane> for Supervisor {
    type Result = Result<RuntimeConfig, ControlError>;
    fn handle(&mut self, msg: PatchLane, _: &mut Context<Self>) -> Self::Result {
        let PatchLane(name, patch) = msg;
        if let Some(v) = patch.window_ms {
            in_range("window_ms", v, 0, MAX_BATCH_DELAY_MS)?;
        }
        if let Some(v) = patch.max_batch {
            in_range("max_batch", v as u64, 1, MAX_BATCH_SIZE)?;
        }
        if let Some(v) = patch.delay_ms {
            in_range("delay_ms", v, 0, MAX_BATCH_DELAY_MS)?;
        }
        if let Some(v) = patch.latency_ms {
            in_range("latency_ms", v, 1, MAX_LATENCY_MS)?;
        }
        let known = self.known_lanes();
        let lane = self
            .config
            .lanes
            .get_mut(&name)
            .ok_or(ControlError::UnknownLane { lane: name.clone(), known })?;
        let mut changes = Vec::new();
        if let Some(v) = patch.window_ms {
            lane.window_ms = v;
            changes.push(format!("window_ms={v}"));
        }
        if let Some(v) = patch.max_batch {
            lane.max_batch = Some(v);
            changes.push(format!("max_batch={v}"));
        }
        if let Some(v) = patch.delay_ms {
            lane.delay_ms = Some(v);
            changes.push(format!("delay_ms={v}"));
        }
        if let Some(v) = patch.max_tokens {
            lane.max_tokens = Some(v);
            changes.push(format!("max_tokens={v}"));
        }
        if let Some(v) = patch.latency_ms {
            lane.latency_ms = v;
            changes.push(format!("latency_ms={v}"));
        }
        if let Some(v) = patch.mode {
            lane.mode = v;
            changes.push(format!("mode={v}"));
        }
        self.push_lane_settings();
        if !changes.is_empty() {
            self.changed(format!("lanes.{name}: {}", changes.join(" ")));
        }
        Ok(self.runtime_config())
    }
}

impl Handler<Pause> for Supervisor {
    type Result = MessageResult<Pause>;
    fn handle(&mut self, msg: Pause, _: &mut Context<Self>) -> Self::Result {
        if self.paused != msg.0 {
            self.paused = msg.0;
            self.former.do_send(SetPaused(msg.0));
            self.metrics.do_send(Publish(MetricsEvent::Paused { paused: msg.0 }));
            // A live change like any other (console `p`, POST /api/v1/config/pause|resume).
            tracing::info!(
                event = "config_changed",
                change = if msg.0 { "paused=true" } else { "paused=false" }
            );
        }
        MessageResult(self.runtime_config())
    }
}

impl Handler<GetConfig> for Supervisor {
    type Result = MessageResult<GetConfig>;
    fn handle(&mut self, _: GetConfig, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.runtime_config())
    }
}

#[cfg(feature = "fault-injection")]
impl Handler<InjectPanic> for Supervisor {
    type Result = Result<(), ControlError>;
    fn handle(&mut self, msg: InjectPanic, _: &mut Context<Self>) -> Self::Result {
        match msg.0 {
            FaultTarget::Pool => self.pool.do_send(crate::engine::pool::PanicOnNextBatch),
            FaultTarget::Lane(name) => {
                let i = self.lane_names.iter().position(|n| n.as_ref() == name).ok_or_else(|| {
                    ControlError::UnknownLane { lane: name.clone(), known: self.known_lanes() }
                })?;
                self.lanes[i].do_send(crate::engine::lane::PanicOnNextBatch);
            }
            FaultTarget::Client(name) => {
                let i = self
                    .config
                    .upstreams
                    .iter()
                    .position(|u| u.name == name)
                    .ok_or(ControlError::UnknownUpstream(name))?;
                self.clients[i].do_send(client::PanicOnNextBatch);
            }
        }
        Ok(())
    }
}
