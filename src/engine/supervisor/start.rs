//! The engine's start order: which actor starts first, and why.
//!
//! 1. The MetricsHub, first: every other actor reports to it from its first message on.
//! 2. The supervisor's and the client pool's and the batch former's mailboxes (contexts, not yet
//!    running), so the actors started before them can hold their addresses: a client reports
//!    released slots to the pool and asks the supervisor for fanout when a lane's fidelity
//!    falls; a lane reports to the former.
//! 3. One LlmClient per upstream (its provider built from the key its `api_key_env` names).
//! 4. One LaneQueue per lane, with its effective settings.
//! 5. The batch former and the pool, then told their lanes and clients.
//! 6. The supervisor, holding every address, and the task that brings items dropped unanswered
//!    home to it.
//!
//! Every actor starts under [`restart`](super::restart) with one shared [`Health`]: the restart
//! policy (see there) is the supervisor's too.

use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::{broadcast, mpsc, watch};

use super::restart::{self, Health};
use super::{Orphan, Supervisor};
use crate::config::Config;
use crate::core::batching::LowerShare;
use crate::engine::batch_former::{AddLanes, BatchFormer};
use crate::engine::client::{ClientOptions, LaneInfo, LlmClient};
use crate::engine::item::{Item, ItemError, Shared};
use crate::engine::lane::LaneQueue;
use crate::engine::metrics::{MetricsEvent, MetricsHub};
use crate::engine::pool::{AddClients, ClientPool};
use crate::engine::{EngineError, MAX_UPSTREAMS};
use crate::providers;

/// Subscriber queue length; a subscriber further behind skips events.
const EVENT_BUFFER: usize = 4096;

/// The running actors, as the [`Engine`](crate::engine::Engine) handle holds them.
pub(crate) struct Running {
    /// The supervisor.
    pub supervisor: Addr<Supervisor>,
    /// Each lane's name and queue, in config order.
    pub lanes: Vec<(Arc<str>, Addr<LaneQueue>)>,
    /// Each upstream's client, in config order.
    pub clients: Vec<Addr<LlmClient>>,
    /// The metrics hub.
    pub metrics: Addr<MetricsHub>,
    /// Where the hub broadcasts.
    pub events: broadcast::Sender<MetricsEvent>,
    /// What every item shares (open count, the way home).
    pub shared: Arc<Shared>,
    /// The actors declared failed.
    pub health: Arc<Health>,
}

/// Starts every actor of `config` in the order above, on the current actix arbiter.
pub(crate) fn start(config: &Config) -> Result<Running, EngineError> {
    if config.upstreams.len() > MAX_UPSTREAMS {
        return Err(EngineError::TooManyUpstreams(config.upstreams.len()));
    }
    let (events, _) = broadcast::channel(EVENT_BUFFER);
    let health = Arc::new(Health::default());
    let metrics =
        restart::start(Context::new(), MetricsHub::new(events.clone()), "metrics".into(), None, &health);

    let supervisor_ctx = Context::<Supervisor>::new();
    let former_ctx = Context::<BatchFormer>::new();
    let pool_ctx = Context::<ClientPool>::new();
    let (former, pool) = (former_ctx.address(), pool_ctx.address());

    let (home_tx, home_rx) = mpsc::unbounded_channel::<Item>();
    let shared = Shared::new(home_tx);
    let (stop_tx, stop_rx) = watch::channel(false);
    let share = LowerShare::new(config.batching.lower_share);

    let lane_infos: Arc<[LaneInfo]> =
        config.lanes.iter().map(|(name, lane)| LaneInfo::of(name, lane)).collect::<Vec<_>>().into();
    let mut clients = Vec::with_capacity(config.upstreams.len());
    for (index, upstream) in config.upstreams.iter().enumerate() {
        let key = upstream.api_key().map_err(|e| EngineError::Config(e.to_string()))?;
        let provider = providers::build(upstream, key)?;
        let options = ClientOptions {
            log_payloads: config.logging.log_payloads,
            share,
            lanes: Arc::clone(&lane_infos),
            supervisor: supervisor_ctx.address(),
        };
        let client = LlmClient::new(
            index,
            upstream.clone(),
            provider,
            pool.clone(),
            metrics.clone(),
            stop_rx.clone(),
            options,
        );
        let name = format!("client:{}", upstream.name);
        let addr = restart::start(Context::new(), client, name, Some(metrics.clone()), &health);
        clients.push((addr, upstream.clone()));
    }

    let mut lanes = Vec::with_capacity(config.lanes.len());
    let mut lane_views = Vec::with_capacity(config.lanes.len());
    for (index, (name, lane)) in config.lanes.iter().enumerate() {
        let name: Arc<str> = Arc::from(name.as_str());
        let settings = lane.effective(&config.batching);
        let queue =
            LaneQueue::new(index, Arc::clone(&name), settings.clone(), former.clone(), metrics.clone());
        let addr =
            restart::start(Context::new(), queue, format!("lane:{name}"), Some(metrics.clone()), &health);
        lane_views.push((addr.clone(), settings));
        lanes.push((name, addr));
    }

    let batch_former = BatchFormer::new(pool.clone(), share);
    restart::start(former_ctx, batch_former, "former".into(), Some(metrics.clone()), &health);
    restart::start(pool_ctx, ClientPool::new(former.clone()), "pool".into(), Some(metrics.clone()), &health);
    former.do_send(AddLanes(lane_views));
    pool.do_send(AddClients(clients.clone()));

    let client_addrs: Vec<Addr<LlmClient>> = clients.iter().map(|(a, _)| a.clone()).collect();
    let supervisor = Supervisor {
        config: config.clone(),
        lane_names: lanes.iter().map(|(n, _)| Arc::clone(n)).collect(),
        lanes: lanes.iter().map(|(_, a)| a.clone()).collect(),
        former,
        pool,
        clients: client_addrs.clone(),
        metrics: metrics.clone(),
        shared: Arc::clone(&shared),
        stop: stop_tx,
        shutting_down: false,
        paused: false,
    };
    let supervisor =
        restart::start(supervisor_ctx, supervisor, "supervisor".into(), Some(metrics.clone()), &health);
    actix::spawn(bring_home(home_rx, supervisor.clone()));
    tracing::info!(
        event = "engine_started",
        lanes = lanes.len(),
        upstreams = config.upstreams.len(),
        tenants = config.tenants.len()
    );
    Ok(Running { supervisor, lanes, clients: client_addrs, metrics, events, shared, health })
}

/// Forwards items dropped unanswered to the Supervisor. A task of its own, not an actor
/// stream, so a Supervisor restart cannot lose the channel.
async fn bring_home(mut home: mpsc::UnboundedReceiver<Item>, supervisor: Addr<Supervisor>) {
    while let Some(item) = home.recv().await {
        if supervisor.connected() {
            supervisor.do_send(Orphan(item));
        } else {
            item.finish(Err(ItemError::ShuttingDown));
        }
    }
}
