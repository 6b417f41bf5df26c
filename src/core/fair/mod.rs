//! A lane's waiting items, served fairly: owners take turns, and within an owner its jobs take
//! turns, so a small job is not stuck behind a big one and one tenant's backlog does not hold up
//! another's first request.
//!
//! Every item costs one turn, so deficit round robin with a quantum of one item is plain round
//! robin: the owner at the front of the ring gives its next job's next item and goes to the back.
//! Within a job, items keep acceptance order (a requeued item goes back to its place). The
//! oldest waiting item — what the batching window is measured from — is tracked in a heap of job
//! heads, updated lazily, so every push and pop costs O(log jobs), not a scan.
//!
//! Owners and jobs live in slabs (vectors of slots with free lists), and the rings hold slot
//! indices: an owner's and a job's id is hashed once per submission, to find its slot, and
//! taking an item in turn hashes nothing and moves no ids. A job keeps its items in the vectors
//! they were submitted in (a submission's items, in order, are appended whole), so accepting a
//! submission copies no item and allocates no queue memory, and a vector is freed once served.
//! Slots freed by a job or owner that ran out of items are reused, buffers and all.
//!
//! Removing a whole job (cancel, expiry, a caller that went away) takes its items out at once.
//! Plain data, no clock: the queue reads each item's id and acceptance instant ([`Accepted`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// Who an item belongs to: a tenant, an API key's owner id, or the local user.
pub type OwnerId = Arc<str>;
/// Which job or request an item is part of.
pub type JobId = Arc<str>;

/// What the queue reads of a waiting item.
pub trait Accepted {
    /// Which item it is: unique among the items waiting (a requeued item keeps its id).
    fn id(&self) -> u64;
    /// When it was accepted: a job's items are served in this order.
    fn accepted_at(&self) -> Instant;
}

/// An owner's slot. Free (`id` None, no jobs, empty ring) or an owner with items waiting.
#[derive(Default)]
struct Owner {
    id: Option<OwnerId>,
    /// Its jobs' slots, by id: looked up once per submission.
    jobs: HashMap<JobId, usize>,
    /// Its jobs, in turn order.
    ring: VecDeque<usize>,
    len: usize,
}

/// A job's slot. Free (`id` None, no chunks) or a job with items waiting.
struct Job<T> {
    id: Option<JobId>,
    /// Bumped whenever the slot is freed, so a heap entry of an earlier job in this slot is
    /// known to be stale without looking the job up by id.
    generation: u64,
    /// Its items in acceptance order, in the vectors they were submitted in; none is empty.
    chunks: VecDeque<VecDeque<T>>,
}

impl<T> Default for Job<T> {
    fn default() -> Self {
        Self { id: None, generation: 0, chunks: VecDeque::new() }
    }
}

impl<T: Accepted> Job<T> {
    fn last_accepted(&self) -> Option<Instant> {
        self.chunks.back().and_then(VecDeque::back).map(Accepted::accepted_at)
    }

    /// Puts one item at its place by acceptance: after every item accepted no later than it.
    /// Returns whether it is the job's new head.
    fn insert(&mut self, value: T) -> bool {
        let at = value.accepted_at();
        let later = |chunk: &VecDeque<T>| chunk.back().is_some_and(|last| last.accepted_at() > at);
        let Some(c) = self.chunks.iter().position(later) else {
            // After everything waiting (or the first item): a chunk of its own, so a submitted
            // vector is never grown.
            self.chunks.push_back(VecDeque::from([value]));
            return self.chunks.len() == 1;
        };
        let chunk = &mut self.chunks[c];
        match chunk.iter().position(|w| w.accepted_at() > at) {
            Some(place) if place > 0 => {
                chunk.insert(place, value);
                false
            }
            // Before the whole chunk (the usual requeue: the job's earliest item came back).
            _ => {
                self.chunks.insert(c, VecDeque::from([value]));
                c == 0
            }
        }
    }

    fn head(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }
}

/// A job head in the oldest-item heap: (accepted at, item id, job slot, the slot's generation).
/// Stale once that job is gone (another generation) or its head is another item.
type Head = (Reverse<Instant>, Reverse<u64>, usize, u64);

/// The fair queue of one lane.
pub struct FairQueue<T> {
    /// Owner slots by id, for submissions.
    index: HashMap<OwnerId, usize>,
    owners: Vec<Owner>,
    free_owners: Vec<usize>,
    /// Owners with items, in turn order.
    ring: VecDeque<usize>,
    jobs: Vec<Job<T>>,
    free_jobs: Vec<usize>,
    /// Jobs with items: the heap holds one live head for each, and stale ones beside.
    live_jobs: usize,
    heads: BinaryHeap<Head>,
    len: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self {
            index: HashMap::new(),
            owners: Vec::new(),
            free_owners: Vec::new(),
            ring: VecDeque::new(),
            jobs: Vec::new(),
            free_jobs: Vec::new(),
            live_jobs: 0,
            heads: BinaryHeap::new(),
            len: 0,
        }
    }
}

impl<T: Accepted> FairQueue<T> {
    /// Items waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Owners with items waiting.
    pub fn owners(&self) -> usize {
        self.ring.len()
    }

    /// Items waiting per owner, largest first, at most `n` owners.
    pub fn top_owners(&self, n: usize) -> Vec<(OwnerId, usize)> {
        let mut all: Vec<(OwnerId, usize)> =
            self.owners.iter().filter_map(|o| o.id.as_ref().map(|id| (Arc::clone(id), o.len))).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Adds an item at the end of its job (or at its place by acceptance, if it was accepted
    /// before items already waiting in that job: a requeue).
    pub fn push(&mut self, owner: &OwnerId, job: &JobId, value: T) {
        self.extend(owner, job, vec![value]);
    }

    /// Adds a submission's items, all of one owner and job, each as [`push`](Self::push) would,
    /// finding the owner and job once. Items in acceptance order that come after the job's last
    /// (every submission but a requeue) stay in `values`, appended whole.
    pub fn extend(&mut self, owner: &OwnerId, job: &JobId, values: Vec<T>) {
        let Some(first) = values.first() else { return };
        let (first_at, first_id) = (first.accepted_at(), first.id());
        let n = values.len();
        let o = self.owner_slot(owner);
        let j = self.job_slot(o, job);
        let Self { owners, jobs, heads, len, .. } = self;
        let (Some(owner), Some(slot)) = (owners.get_mut(o), jobs.get_mut(j)) else { return };
        let in_order = slot.last_accepted().is_none_or(|last| last <= first_at)
            && values.is_sorted_by_key(|v| v.accepted_at());
        if in_order {
            if slot.chunks.is_empty() {
                heads.push((Reverse(first_at), Reverse(first_id), j, slot.generation));
            }
            slot.chunks.push_back(VecDeque::from(values));
        } else {
            for value in values {
                let (at, id) = (value.accepted_at(), value.id());
                if slot.insert(value) {
                    // A new head (a requeued item going first): the heap must know it.
                    heads.push((Reverse(at), Reverse(id), j, slot.generation));
                }
            }
        }
        owner.len += n;
        *len += n;
    }

    /// The slot of `owner`, taken from the free list (and put in the ring) if it has no items.
    fn owner_slot(&mut self, owner: &OwnerId) -> usize {
        if let Some(&o) = self.index.get(owner) {
            return o;
        }
        let o = free_slot(&mut self.owners, &mut self.free_owners);
        self.owners[o].id = Some(Arc::clone(owner));
        self.index.insert(Arc::clone(owner), o);
        self.ring.push_back(o);
        o
    }

    /// The slot of `owner`'s (slot `o`) `job`, taken from the free list (and put in the owner's
    /// ring) if it has no items.
    fn job_slot(&mut self, o: usize, job: &JobId) -> usize {
        if let Some(&j) = self.owners[o].jobs.get(job) {
            return j;
        }
        let j = free_slot(&mut self.jobs, &mut self.free_jobs);
        self.jobs[j].id = Some(Arc::clone(job));
        self.owners[o].jobs.insert(Arc::clone(job), j);
        self.owners[o].ring.push_back(j);
        self.live_jobs += 1;
        j
    }

    /// Takes the next item in turn: the front owner's front job's first item; both go to the
    /// back of their rings.
    pub fn pop(&mut self) -> Option<T> {
        let o = self.ring.pop_front()?;
        let value = self.pop_from(o);
        if self.owners[o].len > 0 {
            self.ring.push_back(o);
        }
        value
    }

    /// Takes up to `max` items in turn, as that many [`pop`](Self::pop)s would, into one vector
    /// sized for them.
    pub fn pop_many(&mut self, max: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(max.min(self.len));
        while out.len() < max {
            match self.pop() {
                Some(value) => out.push(value),
                None => break,
            }
        }
        out
    }

    /// Takes up to `max` items of the owner whose turn it is (its jobs in turn), then moves that
    /// owner to the back: a batch that must not mix owners.
    pub fn pop_owner(&mut self, max: usize) -> Vec<T> {
        let Some(o) = self.ring.pop_front() else { return Vec::new() };
        let mut out = Vec::with_capacity(max.min(self.owners[o].len));
        while out.len() < max {
            match self.pop_from(o) {
                Some(value) => out.push(value),
                None => break,
            }
        }
        if self.owners[o].len > 0 {
            self.ring.push_back(o);
        }
        out
    }

    /// Takes the next item of the owner in slot `o` (its jobs in turn); frees the job's slot
    /// once it has no items, and the owner's once it has none. The owner ring is the caller's.
    fn pop_from(&mut self, o: usize) -> Option<T> {
        let owner = self.owners.get_mut(o)?;
        let j = *owner.ring.front()?;
        let job = self.jobs.get_mut(j)?;
        let chunk = job.chunks.front_mut()?;
        let value = chunk.pop_front()?;
        if chunk.is_empty() {
            // Its submission's vector is served: freed now, for the next one to reuse.
            job.chunks.pop_front();
        }
        owner.ring.pop_front();
        if job.chunks.is_empty() {
            if let Some(id) = job.id.take() {
                owner.jobs.remove(&id);
            }
            job.generation += 1;
            self.free_jobs.push(j);
            self.live_jobs -= 1;
        } else {
            // The heap keeps the job's older head; `oldest` brings it up to date when it
            // surfaces, so a pop costs no heap work.
            owner.ring.push_back(j);
        }
        owner.len -= 1;
        self.len -= 1;
        if owner.len == 0 {
            self.free_owner(o);
        }
        Some(value)
    }

    /// Frees the slot of an owner that has no items left; the owner ring is the caller's.
    fn free_owner(&mut self, o: usize) {
        if let Some(id) = self.owners[o].id.take() {
            self.index.remove(&id);
        }
        self.free_owners.push(o);
    }

    /// When the oldest waiting item was accepted.
    pub fn oldest(&mut self) -> Option<Instant> {
        self.refresh_heads();
        self.heads.peek().map(|(Reverse(at), ..)| *at)
    }

    /// The current head `(accepted at, id)` of the job in slot `j`, if that slot still holds the
    /// job of `generation`.
    fn head_of(&self, j: usize, generation: u64) -> Option<(Instant, u64)> {
        let job = self.jobs.get(j).filter(|job| job.generation == generation && job.id.is_some())?;
        job.head().map(|head| (head.accepted_at(), head.id()))
    }

    /// Brings the top of the heap up to date, so [`oldest`](Self::oldest) is exact. Every job
    /// with items has an entry no newer than its head (one is pushed when a job starts or gets
    /// a new first item, and heads only get newer as items leave), so the heap's least entry,
    /// once it is a job's current head, is the oldest item. An entry whose job is gone (its slot
    /// freed, perhaps reused: another generation) is dropped; one whose job has moved on is
    /// replaced by the job's current head. The heap is rebuilt from the live heads when stale
    /// entries outnumber them.
    fn refresh_heads(&mut self) {
        if self.heads.len() > 2 * self.live_jobs + 64 {
            let heads: Vec<Head> = (0..self.jobs.len())
                .filter_map(|j| {
                    let generation = self.jobs[j].generation;
                    self.head_of(j, generation).map(|(at, id)| (Reverse(at), Reverse(id), j, generation))
                })
                .collect();
            self.heads = BinaryHeap::from(heads);
            return;
        }
        while let Some(&(_, Reverse(id), j, generation)) = self.heads.peek() {
            match self.head_of(j, generation) {
                Some((_, head)) if head == id => return,
                Some((at, head)) => {
                    self.heads.pop();
                    self.heads.push((Reverse(at), Reverse(head), j, generation));
                }
                None => {
                    self.heads.pop();
                }
            }
        }
    }

    /// Removes every item of `job` (of any owner); returns them in acceptance order (one
    /// owner's after another's, should two owners use the same job id).
    pub fn remove_job(&mut self, job: &JobId) -> Vec<T> {
        let mut out = Vec::new();
        for o in 0..self.owners.len() {
            let Some(j) = self.owners[o].jobs.remove(job) else { continue };
            let (owner, slot) = (&mut self.owners[o], &mut self.jobs[j]);
            owner.ring.retain(|&x| x != j);
            let before = out.len();
            out.extend(slot.chunks.drain(..).flatten());
            let n = out.len() - before;
            slot.id = None;
            slot.generation += 1;
            self.free_jobs.push(j);
            self.live_jobs -= 1;
            owner.len -= n;
            self.len -= n;
            if owner.len == 0 {
                self.free_owner(o);
                self.ring.retain(|&x| x != o);
            }
        }
        out
    }

    /// Removes every item, in no particular order.
    pub fn drain(&mut self) -> Vec<T> {
        // Rare (shutdown, failing a lane): start afresh rather than free slot by slot.
        let all = std::mem::take(self);
        all.jobs.into_iter().flat_map(|job| job.chunks).flatten().collect()
    }
}

/// A free slot of `slots`: one from the free list, or a new one at the end.
fn free_slot<S: Default>(slots: &mut Vec<S>, free: &mut Vec<usize>) -> usize {
    free.pop().unwrap_or_else(|| {
        slots.push(S::default());
        slots.len() - 1
    })
}
