//! What flows through the engine: prompts in, outcomes out, and the [`Item`] that carries one
//! prompt from a door to an upstream and its outcome back.
//!
//! An item owns its reply channel. It is answered exactly once ([`Item::finish`]); if it is
//! dropped unanswered — because the actor or task holding it panicked — its `Drop` sends it home
//! to the Supervisor, which puts it back in its lane. That is how "nothing accepted is lost"
//! holds even when the holder dies mid-message.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use super::batch::{BatchId, BatchTracker};
use crate::core::fair::{Accepted, JobId, OwnerId};
use crate::providers::{ChatMessage, ProviderError, Role, Usage};

/// Whose work a submission is, which job or request it belongs to, and until when its answers
/// are wanted. Every item of a submission shares one; a door keeps it to withdraw what has not
/// been sent yet ([`Engine::withdraw`](super::Engine::withdraw)).
#[derive(Debug)]
pub struct Origin {
    /// The tenant, the API key's owner id, or [`Origin::LOCAL`].
    pub owner: OwnerId,
    /// The batch job, `ferry run`, or HTTP request the items are part of.
    pub job: JobId,
    /// After this instant nobody waits for the answer: an item that no upstream can send
    /// before it fails at once, naming the limit. None: no deadline (`ferry run`).
    pub deadline: Option<Instant>,
    withdrawn: AtomicU8,
}

impl Origin {
    /// The owner of work from this machine (`ferry run`, the console, keys off).
    pub const LOCAL: &'static str = "local";

    /// Work of `owner` in `job`, with no deadline.
    pub fn new(owner: impl Into<OwnerId>, job: impl Into<JobId>) -> Arc<Self> {
        Self::with_deadline(owner, job, None)
    }

    /// Work of `owner` in `job`, wanted until `deadline`.
    pub fn with_deadline(
        owner: impl Into<OwnerId>,
        job: impl Into<JobId>,
        deadline: Option<Instant>,
    ) -> Arc<Self> {
        Arc::new(Self { owner: owner.into(), job: job.into(), deadline, withdrawn: AtomicU8::new(0) })
    }

    /// A request of its own for `owner`: a fresh job id (`req_` and a ULID).
    pub fn request(owner: impl Into<OwnerId>, deadline: Option<Instant>) -> Arc<Self> {
        Self::with_deadline(owner, format!("req_{}", ulid::Ulid::new()), deadline)
    }

    /// Why its items were withdrawn, if they were.
    pub fn withdrawn(&self) -> Option<Withdrawal> {
        Withdrawal::from_code(self.withdrawn.load(Ordering::Acquire))
    }

    /// Marks the items withdrawn (the first reason stays); true if this call marked them.
    pub(crate) fn mark_withdrawn(&self, why: Withdrawal) -> bool {
        self.withdrawn.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }
}

/// Why a job's unsent items were taken out of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Withdrawal {
    /// The batch was cancelled.
    Cancelled = 1,
    /// The batch's completion window ended.
    Expired = 2,
    /// The HTTP caller went away before its answer.
    CallerGone = 3,
    /// The HTTP door stopped waiting (its timeout).
    TimedOut = 4,
    /// The batch job's feed stopped on an error (its store): the item stays pending and is sent
    /// when the job runs again.
    Interrupted = 5,
}

impl Withdrawal {
    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Cancelled),
            2 => Some(Self::Expired),
            3 => Some(Self::CallerGone),
            4 => Some(Self::TimedOut),
            5 => Some(Self::Interrupted),
            _ => None,
        }
    }

    /// The reason as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
            Self::CallerGone => "caller_gone",
            Self::TimedOut => "timed_out",
            Self::Interrupted => "interrupted",
        }
    }
}

impl std::fmt::Display for Withdrawal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Cancelled => "the batch was cancelled before this item was sent",
            Self::Expired => "the batch's completion window ended before this item was sent",
            Self::CallerGone => "the caller went away before this item was sent",
            Self::TimedOut => "no answer within the request's timeout; the item was not sent",
            Self::Interrupted => "the batch job stopped on an error before this item was sent; it is sent when the job runs again",
        })
    }
}

/// One prompt as a door submits it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prompt {
    /// The conversation; a plain prompt is one user message.
    pub messages: Vec<ChatMessage>,
    /// Model to use; absent: the lane's model, else the upstream's default.
    pub model: Option<String>,
    /// Cap on generated tokens; absent: the lane's `max_tokens`.
    pub max_tokens: Option<u32>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Sequences that end the reply (empty: none).
    pub stop: Vec<String>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// OpenAI's `response_format` as the caller gave it; an item with one is never combined.
    pub response_format: Option<serde_json::Value>,
}

impl Prompt {
    /// A prompt of one user message.
    pub fn text(text: impl Into<String>) -> Self {
        Self { messages: vec![ChatMessage::user(text)], ..Self::default() }
    }

    /// The last user message: what combined mode packs into its array.
    pub fn last_user_text(&self) -> &str {
        self.messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.as_str()).unwrap_or("")
    }

    /// Tokens the prompt is likely to take, prompt and reply budget (for tokens-per-minute
    /// limits before it is sent).
    pub fn estimated_tokens(&self) -> u64 {
        crate::core::estimate::call_tokens(
            &self.messages,
            self.max_tokens,
            crate::core::estimate::DEFAULT_REPLY_TOKENS,
        )
    }

    /// Whether this prompt can share a combined call: a single user message, no reply format of
    /// its own (a combined reply has the format that packs the answers) and no stop sequences
    /// (they would cut the combined reply, not this prompt's answer).
    pub fn combinable(&self) -> bool {
        self.response_format.is_none()
            && self.stop.is_empty()
            && matches!(self.messages.as_slice(), [m] if m.role == Role::User)
    }

    /// Whether two prompts ask for answers the same way: same model and sampling parameters, so
    /// one combined call can carry both. (Floats compare by bits: 0.7 and 0.7 agree, NaN never
    /// reaches here.)
    pub fn same_parameters(&self, other: &Prompt) -> bool {
        self.model == other.model
            && self.temperature.map(f32::to_bits) == other.temperature.map(f32::to_bits)
            && self.top_p.map(f32::to_bits) == other.top_p.map(f32::to_bits)
            && self.stop == other.stop
            && self.seed == other.seed
            && self.response_format == other.response_format
    }
}

/// A prompt's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// The generated text.
    pub text: String,
    /// Tokens used by the call that produced it (for a combined call: shared by its items).
    pub usage: Usage,
    /// Upstream that answered.
    pub upstream: Arc<str>,
    /// Model that answered.
    pub model: Arc<str>,
    /// Batch the item went out in.
    pub batch_id: BatchId,
    /// Upstream calls made for this item (1 when the first call succeeded).
    pub attempts: u32,
    /// Time from acceptance to the answer.
    #[serde(serialize_with = "as_millis")]
    pub latency: Duration,
}

fn as_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why an accepted item ended without an answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ItemError {
    /// The upstream failed and no other upstream could take the item.
    #[error("upstream `{upstream}` failed after {attempts} attempt(s): {error}")]
    Upstream {
        /// The last upstream tried.
        upstream: Arc<str>,
        /// What it answered last.
        error: ProviderError,
        /// Calls made for this item.
        attempts: u32,
    },
    /// No configured upstream serves the model.
    #[error("no upstream serves model `{model}`")]
    NoUpstream {
        /// The model asked for.
        model: String,
    },
    /// The item was held by actors that failed too many times.
    #[error("item was dropped by a failing actor {times} times; giving up on it")]
    Crashed {
        /// Times it was put back.
        times: u32,
    },
    /// The engine shut down before the item could be processed.
    #[error("ferry is shutting down; the item was not processed")]
    ShuttingDown,
    /// Its job was withdrawn (cancel, expiry, the caller left) before it was sent.
    #[error("{0}")]
    Withdrawn(Withdrawal),
    /// No upstream that serves it can send it before its deadline.
    #[error("no upstream can send this before its deadline: {limit}")]
    OverBudget {
        /// The limit in the way, named (`upstream `a`: requests per day spent until …`).
        limit: String,
        /// Seconds until the soonest upstream could send it.
        retry_after_s: u64,
    },
}

/// What every item ends in.
pub type Outcome = Result<Answer, ItemError>;

/// Why a submission was refused (nothing of it was accepted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The lane is at capacity.
    #[error("queue full: lane `{lane}` holds {held} of {capacity} items; {asked} more do not fit")]
    QueueFull {
        /// Lane name.
        lane: String,
        /// Items it holds.
        held: usize,
        /// Its capacity.
        capacity: usize,
        /// Items in the refused submission.
        asked: usize,
    },
    /// No such lane.
    #[error("unknown lane `{lane}`; lanes are: {known}")]
    UnknownLane {
        /// The name given.
        lane: String,
        /// The configured lanes, comma-separated.
        known: String,
    },
    /// Intake is closed.
    #[error("ferry is shutting down and accepts no new prompts")]
    ShuttingDown,
    /// The engine's actors are gone.
    #[error("the engine has stopped")]
    Stopped,
    /// An actor panicked too often and was stopped (see `restart.rs`); ferry takes no new work
    /// until it is restarted.
    #[error(
        "ferry takes no new work: actor {actors} failed (it kept panicking); restart ferry, and see its log"
    )]
    Failed {
        /// The failed actors, comma-separated.
        actors: String,
    },
}

/// Where an item's outcome goes.
pub(crate) enum Reply {
    /// A single waiting submitter.
    One(oneshot::Sender<Outcome>),
    /// Position `index` of a multi-item submission.
    Indexed { index: usize, tx: mpsc::UnboundedSender<(usize, Outcome)> },
}

impl Reply {
    fn send(self, outcome: Outcome) {
        // A submitter that stopped waiting (client went away) is not an engine error.
        match self {
            Reply::One(tx) => drop(tx.send(outcome)),
            Reply::Indexed { index, tx } => drop(tx.send((index, outcome))),
        }
    }
}

/// What every item shares with the engine: the way home, the count of open items, and whether
/// a drain under way should end now; a drain waits on `settled` for either to happen.
pub(crate) struct Shared {
    home: mpsc::UnboundedSender<Item>,
    open: AtomicUsize,
    cut_off: AtomicBool,
    settled: Notify,
}

impl Shared {
    pub(crate) fn new(home: mpsc::UnboundedSender<Item>) -> Arc<Self> {
        Arc::new(Self {
            home,
            open: AtomicUsize::new(0),
            cut_off: AtomicBool::new(false),
            settled: Notify::new(),
        })
    }

    /// One open item answered (or withdrawn); the last one wakes a drain.
    fn close_one(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_waiters();
        }
    }

    /// Waits until no item is open, or `deadline` passes, or (with `or_cut_off`) a cut-off is
    /// asked for: woken by the last answer or the cut-off, never polling.
    pub(crate) async fn until_settled(&self, deadline: Instant, or_cut_off: bool) {
        loop {
            let woken = self.settled.notified();
            tokio::pin!(woken);
            // Registered before the check, so a wake-up between the two is not missed.
            woken.as_mut().enable();
            if self.open() == 0 || (or_cut_off && self.is_cut_off()) {
                return;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return;
            }
        }
    }

    /// Items accepted and not yet answered.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Asks a drain under way (or the next one) to end now.
    pub(crate) fn cut_off(&self) {
        self.cut_off.store(true, Ordering::Release);
        self.settled.notify_waiters();
    }

    /// Whether [`Shared::cut_off`] was asked for.
    pub(crate) fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Acquire)
    }
}

/// One prompt on its way through the engine.
pub(crate) struct Item {
    /// Engine-wide sequence number.
    pub id: u64,
    /// Index of its lane.
    pub lane: usize,
    /// Whose it is, its job and deadline (shared by its submission).
    pub origin: Arc<Origin>,
    /// What to ask.
    pub prompt: Prompt,
    /// When the engine accepted it; its lane is ordered by this.
    pub accepted_at: Instant,
    /// Upstream calls made so far.
    pub attempts: u32,
    /// Times it came home from a failed holder.
    pub requeues: u32,
    /// Tokens of earlier calls made for it — its share of a combined call it is sampled from, or a
    /// combined reply nothing could be read from — added to its answer's usage, so every token an
    /// upstream reports lands in some item.
    pub spent: Usage,
    /// The batch it went out in, once released.
    pub batch: Option<Arc<BatchTracker>>,
    reply: Option<Reply>,
    shared: Arc<Shared>,
}

impl Item {
    /// A new accepted item; counts as open until answered.
    pub(crate) fn new(
        id: u64,
        lane: usize,
        origin: &Arc<Origin>,
        prompt: Prompt,
        reply: Reply,
        shared: &Arc<Shared>,
    ) -> Self {
        shared.open.fetch_add(1, Ordering::AcqRel);
        Self {
            id,
            lane,
            origin: Arc::clone(origin),
            prompt,
            accepted_at: Instant::now(),
            attempts: 0,
            requeues: 0,
            spent: Usage::default(),
            batch: None,
            reply: Some(reply),
            shared: Arc::clone(shared),
        }
    }

    /// Delivers the outcome. Consumes the item, so it happens once.
    pub(crate) fn finish(mut self, outcome: Outcome) {
        if let Some(batch) = self.batch.take() {
            batch.item_done(outcome.is_ok());
        }
        if let Some(reply) = self.reply.take() {
            reply.send(outcome);
            self.shared.close_one();
        }
    }

    /// Withdraws an item that was never accepted (its submission was refused): no outcome is
    /// sent, the submitter learns of the refusal from the submit call itself.
    pub(crate) fn withdraw(mut self) {
        if self.reply.take().is_some() {
            self.shared.close_one();
        }
    }

    /// Why its job was withdrawn, if it was: it must not be sent.
    pub(crate) fn withdrawn(&self) -> Option<Withdrawal> {
        self.origin.withdrawn()
    }

    /// The batch id, for answers.
    pub(crate) fn batch_id(&self) -> BatchId {
        self.batch.as_ref().map(|b| b.id).unwrap_or_default()
    }

    /// Its answer `text`, from the call that cost `usage` (plus what earlier calls [spent]).
    ///
    /// [spent]: Item::spent
    pub(crate) fn answer(&self, text: String, usage: Usage, upstream: Arc<str>, model: Arc<str>) -> Answer {
        Answer {
            text,
            usage: usage.plus(self.spent),
            upstream,
            model,
            batch_id: self.batch_id(),
            attempts: self.attempts,
            latency: self.accepted_at.elapsed(),
        }
    }
}

impl Accepted for Item {
    fn id(&self) -> u64 {
        self.id
    }
    fn accepted_at(&self) -> Instant {
        self.accepted_at
    }
}

impl Drop for Item {
    fn drop(&mut self) {
        let Some(reply) = self.reply.take() else { return };
        if let Some(batch) = self.batch.take() {
            batch.item_left();
        }
        let orphan = Item {
            id: self.id,
            lane: self.lane,
            origin: Arc::clone(&self.origin),
            prompt: std::mem::take(&mut self.prompt),
            accepted_at: self.accepted_at,
            attempts: self.attempts,
            requeues: self.requeues + 1,
            spent: self.spent,
            batch: None,
            reply: Some(reply),
            shared: Arc::clone(&self.shared),
        };
        if let Err(mpsc::error::SendError(mut orphan)) = self.shared.home.send(orphan) {
            // The Supervisor is gone: the engine has stopped. Answer here, or the submitter
            // would wait forever; taking the reply first keeps this Drop from recursing.
            if let Some(reply) = orphan.reply.take() {
                reply.send(Err(ItemError::ShuttingDown));
                orphan.shared.close_one();
            }
        }
    }
}

/// The outcomes of a multi-item submission, delivered as they come and collectable in order.
pub struct Submission {
    rx: mpsc::UnboundedReceiver<(usize, Outcome)>,
    len: usize,
}

impl Submission {
    pub(crate) fn new(rx: mpsc::UnboundedReceiver<(usize, Outcome)>, len: usize) -> Self {
        Self { rx, len }
    }

    /// Items in the submission.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the submission had no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The next outcome to arrive, with the index of its prompt; None when all have arrived.
    pub async fn next(&mut self) -> Option<(usize, Outcome)> {
        self.rx.recv().await
    }

    /// Waits for every outcome and returns them in submission order.
    pub async fn collect(mut self) -> Vec<Outcome> {
        let mut slots: Vec<Option<Outcome>> = (0..self.len).map(|_| None).collect();
        while let Some((index, outcome)) = self.rx.recv().await {
            if let Some(slot) = slots.get_mut(index) {
                *slot = Some(outcome);
            }
        }
        // Every item answers before its sender drops, so a gap means the engine died under it.
        slots.into_iter().map(|s| s.unwrap_or(Err(ItemError::ShuttingDown))).collect()
    }
}
