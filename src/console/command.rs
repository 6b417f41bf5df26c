//! What the operator asks for, and the [`Controller`] that carries it out through the same calls
//! as the HTTP config endpoints: the [`Engine`] handle in process, those endpoints when attached
//! to a daemon. Either way the engine logs `event=config_changed`.

use std::time::Duration;

use crate::app::{MAX_BATCH_DELAY_MS, MAX_BATCH_SIZE};
use crate::engine::{Engine, LanePatch, Prompt};

use super::error::ConsoleError;
use super::remote::RemoteClient;
use super::view::ConfigView;

/// Prompts a burst submits (spread over the lanes in process; to the bulk lane remotely).
pub const BURST: usize = 200;

/// A change by an amount or to a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add this (negative: subtract), staying in range.
    By(i64),
    /// Set this; refused when out of range, as the HTTP endpoints refuse it.
    To(u64),
}

impl Step {
    fn apply(self, current: u64, min: u64, max: u64, field: &'static str) -> Result<u64, ConsoleError> {
        match self {
            Step::By(delta) => Ok(current.saturating_add_signed(delta).clamp(min, max)),
            Step::To(got) if (min..=max).contains(&got) => Ok(got),
            Step::To(got) => Err(ConsoleError::OutOfRange { field, min, max, got }),
        }
    }
}

/// What a key asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Change `[batching] batch_size`.
    BatchSize(Step),
    /// Change `[batching] batch_delay_ms`.
    BatchDelay(Step),
    /// Change a lane's window.
    LaneWindow(String, Step),
    /// Change a lane's max batch.
    LaneMaxBatch(String, Step),
    /// Stop releasing batches.
    Pause,
    /// Release batches again.
    Resume,
    /// Submit demo prompts.
    Burst,
    /// Leave (after a drain in process).
    Quit,
}

/// A control call with its value settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `POST /api/v1/config/batch-size`.
    BatchSize(usize),
    /// `POST /api/v1/config/batch-delay`.
    BatchDelay(u64),
    /// `POST /api/v1/config/lanes/{lane}`.
    Lane(String, LanePatch),
    /// `POST /api/v1/config/pause`.
    Pause,
    /// `POST /api/v1/config/resume`.
    Resume,
    /// Demo prompts.
    Burst(usize),
}

impl Command {
    /// The call this command makes given the configuration now; `None` for [`Command::Quit`].
    pub fn resolve(&self, config: Option<&ConfigView>) -> Result<Option<Call>, ConsoleError> {
        let known = || config.ok_or(ConsoleError::NoConfig);
        let window_max = MAX_BATCH_DELAY_MS;
        let call = match self {
            Command::BatchSize(step) => {
                let size = step.apply(known()?.batch_size as u64, 1, MAX_BATCH_SIZE, "batch size")?;
                Call::BatchSize(usize::try_from(size).unwrap_or(1))
            }
            Command::BatchDelay(step) => Call::BatchDelay(step.apply(
                known()?.batch_delay_ms,
                0,
                MAX_BATCH_DELAY_MS,
                "batch delay (ms)",
            )?),
            Command::LaneWindow(lane, step) => {
                let current = known()?.lanes.get(lane).map_or(0, |l| l.window_ms);
                let window_ms = Some(step.apply(current, 0, window_max, "window (ms)")?);
                Call::Lane(lane.clone(), LanePatch { window_ms, ..LanePatch::default() })
            }
            Command::LaneMaxBatch(lane, step) => {
                let current = known()?.lanes.get(lane).map_or(1, |l| l.max_batch as u64);
                let max = step.apply(current, 1, MAX_BATCH_SIZE, "max batch")?;
                let max_batch = Some(usize::try_from(max).unwrap_or(1));
                Call::Lane(lane.clone(), LanePatch { max_batch, ..LanePatch::default() })
            }
            Command::Pause => Call::Pause,
            Command::Resume => Call::Resume,
            Command::Burst => Call::Burst(BURST),
            Command::Quit => return Ok(None),
        };
        Ok(Some(call))
    }
}

impl Call {
    /// What the configuration will be once the call succeeds.
    pub fn apply_to(&self, config: &mut ConfigView) {
        match self {
            Call::BatchSize(size) => {
                config.batch_size = *size;
                for lane in config.lanes.values_mut().filter(|l| l.max_batch_follows_global) {
                    lane.max_batch = *size;
                }
            }
            Call::BatchDelay(ms) => {
                config.batch_delay_ms = *ms;
                for lane in config.lanes.values_mut().filter(|l| l.delay_follows_global) {
                    lane.delay_ms = *ms;
                }
            }
            Call::Lane(name, patch) => {
                if let Some(lane) = config.lanes.get_mut(name) {
                    if let Some(w) = patch.window_ms {
                        lane.window_ms = w;
                    }
                    if let Some(m) = patch.max_batch {
                        lane.max_batch = m;
                        lane.max_batch_follows_global = false;
                    }
                    if let Some(d) = patch.delay_ms {
                        lane.delay_ms = d;
                        lane.delay_follows_global = false;
                    }
                }
            }
            Call::Pause => config.paused = true,
            Call::Resume => config.paused = false,
            Call::Burst(_) => {}
        }
    }
}

/// What a call did: the configuration after it (if it changed any) and a line for the status bar.
#[derive(Debug, Clone)]
pub struct Done {
    /// The configuration now.
    pub config: Option<ConfigView>,
    /// What happened.
    pub message: String,
}

/// Carries out calls on an engine in this process or a daemon over HTTP.
#[derive(Clone)]
pub enum Controller {
    /// The engine in this process.
    Local(Engine),
    /// A `ferry serve` daemon.
    Remote(RemoteClient),
}

impl Controller {
    /// The live configuration.
    pub async fn config(&self) -> Result<ConfigView, ConsoleError> {
        match self {
            Controller::Local(engine) => Ok(ConfigView::from(&engine.config().await?)),
            Controller::Remote(remote) => remote.config().await,
        }
    }

    /// Makes `call`.
    pub async fn run(&self, call: Call) -> Result<Done, ConsoleError> {
        let message = describe(&call);
        if let Call::Burst(n) = call {
            let message = match self {
                Controller::Local(engine) => burst_local(engine, n).await?,
                Controller::Remote(remote) => remote.burst(n).await?,
            };
            return Ok(Done { config: None, message });
        }
        let config = match self {
            Controller::Local(engine) => ConfigView::from(&local(engine, call).await?),
            Controller::Remote(remote) => remote.run(call).await?,
        };
        Ok(Done { config: Some(config), message })
    }
}

async fn local(engine: &Engine, call: Call) -> Result<crate::engine::RuntimeConfig, ConsoleError> {
    Ok(match call {
        Call::BatchSize(size) => engine.set_batch_size(size).await?,
        Call::BatchDelay(ms) => engine.set_batch_delay(ms).await?,
        Call::Lane(lane, patch) => engine.update_lane(&lane, patch).await?,
        Call::Pause => engine.pause().await?,
        Call::Resume => engine.resume().await?,
        Call::Burst(_) => engine.config().await?,
    })
}

/// Spreads `n` demo prompts over every lane; their answers arrive in the background.
async fn burst_local(engine: &Engine, n: usize) -> Result<String, ConsoleError> {
    let lanes = engine.lanes();
    let per_lane = n.div_ceil(lanes.len().max(1));
    for lane in &lanes {
        let prompts =
            (0..per_lane).map(|i| Prompt::text(format!("demo prompt {i} for the {lane} lane"))).collect();
        let submission = engine.submit(lane, prompts).await?;
        actix_rt::spawn(async move {
            // Outcomes show up in the metrics; waiting here only keeps the receivers alive.
            let _ = tokio::time::timeout(Duration::from_secs(600), submission.collect()).await;
        });
    }
    Ok(format!(
        "submitted {} demo prompts ({per_lane} to each of {} lanes)",
        per_lane * lanes.len(),
        lanes.len()
    ))
}

fn describe(call: &Call) -> String {
    match call {
        Call::BatchSize(size) => format!("batch size set to {size}"),
        Call::BatchDelay(ms) => format!("batch delay set to {ms} ms"),
        Call::Lane(lane, patch) => {
            let mut parts = Vec::new();
            if let Some(w) = patch.window_ms {
                parts.push(format!("window {w} ms"));
            }
            if let Some(m) = patch.max_batch {
                parts.push(format!("max batch {m}"));
            }
            format!("lane {lane}: {}", parts.join(", "))
        }
        Call::Pause => "dispatch paused".into(),
        Call::Resume => "dispatch resumed".into(),
        Call::Burst(n) => format!("burst of {n}"),
    }
}
