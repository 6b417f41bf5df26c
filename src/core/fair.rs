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
//! Removing a whole job (cancel, expiry, a caller that went away) takes its items out at once.
//! Plain data, no clock: callers pass each item's id and acceptance instant.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

/// Who an item belongs to: a tenant, an API key's owner id, or the local user.
pub type OwnerId = Arc<str>;
/// Which job or request an item is part of.
pub type JobId = Arc<str>;

/// One waiting item with what the queue orders it by.
struct Waiting<T> {
    id: u64,
    at: Instant,
    value: T,
}

struct Owner<T> {
    jobs: HashMap<JobId, VecDeque<Waiting<T>>>,
    /// Jobs with items, in turn order.
    ring: VecDeque<JobId>,
    len: usize,
}

impl<T> Owner<T> {
    fn new() -> Self {
        Self { jobs: HashMap::new(), ring: VecDeque::new(), len: 0 }
    }
}

/// A job head in the oldest-item heap; stale once the job's head is another item.
type Head = (Reverse<Instant>, Reverse<u64>, OwnerId, JobId);

/// The fair queue of one lane.
pub struct FairQueue<T> {
    owners: HashMap<OwnerId, Owner<T>>,
    /// Owners with items, in turn order.
    ring: VecDeque<OwnerId>,
    heads: BinaryHeap<Head>,
    len: usize,
    /// Jobs with items: the heap holds one live head for each, and stale ones beside.
    jobs: usize,
}

impl<T> Default for FairQueue<T> {
    fn default() -> Self {
        Self { owners: HashMap::new(), ring: VecDeque::new(), heads: BinaryHeap::new(), len: 0, jobs: 0 }
    }
}

impl<T> FairQueue<T> {
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
            self.owners.iter().map(|(owner, q)| (Arc::clone(owner), q.len)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Adds an item at the end of its job (or at its place by acceptance, if it was accepted
    /// before items already waiting in that job: a requeue).
    pub fn push(&mut self, owner: &OwnerId, job: &JobId, id: u64, at: Instant, value: T) {
        self.extend(owner, job, std::iter::once((id, at, value)));
    }

    /// Adds items `(id, accepted at, value)` of one owner and job, each as [`push`](Self::push)
    /// would, finding the owner and job once.
    pub fn extend(
        &mut self,
        owner: &OwnerId,
        job: &JobId,
        items: impl IntoIterator<Item = (u64, Instant, T)>,
    ) {
        let entry = match self.owners.entry(Arc::clone(owner)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                self.ring.push_back(Arc::clone(owner));
                entry.insert(Owner::new())
            }
        };
        let queue = match entry.jobs.entry(Arc::clone(job)) {
            Entry::Occupied(queue) => queue.into_mut(),
            Entry::Vacant(queue) => {
                entry.ring.push_back(Arc::clone(job));
                self.jobs += 1;
                queue.insert(VecDeque::new())
            }
        };
        let items = items.into_iter();
        queue.reserve(items.size_hint().0);
        for (id, at, value) in items {
            let place = if queue.back().is_none_or(|last| last.at <= at) {
                queue.len()
            } else {
                queue.iter().position(|waiting| waiting.at > at).unwrap_or(queue.len())
            };
            queue.insert(place, Waiting { id, at, value });
            if place == 0 {
                // A new head (a new job, or a requeued item going first): the heap must know it.
                self.heads.push((Reverse(at), Reverse(id), Arc::clone(owner), Arc::clone(job)));
            }
            entry.len += 1;
            self.len += 1;
        }
    }

    /// Takes the next item in turn: the front owner's front job's first item; both go to the
    /// back of their rings.
    pub fn pop(&mut self) -> Option<T> {
        let owner = self.ring.pop_front()?;
        let value = self.pop_from(&owner);
        if self.owners.contains_key(&owner) {
            self.ring.push_back(owner);
        }
        value
    }

    /// Takes up to `max` items of the owner whose turn it is (its jobs in turn), then moves that
    /// owner to the back: a batch that must not mix owners.
    pub fn pop_owner(&mut self, max: usize) -> Vec<T> {
        let Some(owner) = self.ring.pop_front() else { return Vec::new() };
        let mut out = Vec::with_capacity(max.min(self.owners.get(&owner).map_or(0, |o| o.len)));
        while out.len() < max {
            match self.pop_from(&owner) {
                Some(value) => out.push(value),
                None => break,
            }
        }
        if self.owners.contains_key(&owner) {
            self.ring.push_back(owner);
        }
        out
    }

    /// Takes `owner`'s next item (its jobs in turn); forgets the owner once it has none. The
    /// owner ring is the caller's.
    fn pop_from(&mut self, owner_id: &OwnerId) -> Option<T> {
        let owner = self.owners.get_mut(owner_id)?;
        let job_id = owner.ring.pop_front()?;
        let queue = owner.jobs.get_mut(&job_id)?;
        let waiting = queue.pop_front()?;
        match queue.front() {
            // The heap keeps the job's older head; `oldest` brings it up to date when it
            // surfaces, so a pop costs no heap work.
            Some(_) => owner.ring.push_back(job_id),
            None => {
                owner.jobs.remove(&job_id);
                self.jobs -= 1;
            }
        }
        owner.len -= 1;
        self.len -= 1;
        if owner.len == 0 {
            self.owners.remove(owner_id);
        }
        Some(waiting.value)
    }

    /// When the oldest waiting item was accepted.
    pub fn oldest(&mut self) -> Option<Instant> {
        self.refresh_heads();
        self.heads.peek().map(|(Reverse(at), ..)| *at)
    }

    /// Brings the top of the heap up to date, so [`oldest`](Self::oldest) is exact. Every job
    /// with items has an entry no newer than its head (one is pushed when a job starts or gets
    /// a new first item, and heads only get newer as items leave), so the heap's least entry,
    /// once it is a job's current head, is the oldest item. An entry whose job is gone is
    /// dropped; one whose job has moved on is replaced by the job's current head. The heap is
    /// rebuilt from the live heads when stale entries outnumber them.
    fn refresh_heads(&mut self) {
        if self.heads.len() > 2 * self.jobs + 64 {
            self.heads = self
                .owners
                .iter()
                .flat_map(|(owner, o)| {
                    o.jobs.iter().filter_map(move |(job, queue)| {
                        queue
                            .front()
                            .map(|w| (Reverse(w.at), Reverse(w.id), Arc::clone(owner), Arc::clone(job)))
                    })
                })
                .collect();
            return;
        }
        while let Some((_, Reverse(id), owner, job)) = self.heads.peek() {
            let head = self.owners.get(owner).and_then(|o| o.jobs.get(job)).and_then(VecDeque::front);
            match head {
                Some(head) if head.id == *id => return,
                Some(head) => {
                    let (at, id) = (head.at, head.id);
                    if let Some((_, _, owner, job)) = self.heads.pop() {
                        self.heads.push((Reverse(at), Reverse(id), owner, job));
                    }
                }
                None => {
                    self.heads.pop();
                }
            }
        }
    }

    /// Removes every item of `job` (of any owner); returns them in acceptance order.
    pub fn remove_job(&mut self, job: &JobId) -> Vec<T> {
        let mut out = Vec::new();
        let mut emptied = Vec::new();
        for (owner_id, owner) in &mut self.owners {
            if let Some(queue) = owner.jobs.remove(job) {
                self.jobs -= 1;
                owner.ring.retain(|j| j != job);
                owner.len -= queue.len();
                self.len -= queue.len();
                out.extend(queue.into_iter().map(|w| w.value));
                if owner.len == 0 {
                    emptied.push(Arc::clone(owner_id));
                }
            }
        }
        for owner in emptied {
            self.owners.remove(&owner);
            self.ring.retain(|o| *o != owner);
        }
        out
    }

    /// Removes every item, in no particular order.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len);
        for (_, owner) in self.owners.drain() {
            for (_, queue) in owner.jobs {
                out.extend(queue.into_iter().map(|w| w.value));
            }
        }
        self.ring.clear();
        self.heads.clear();
        self.len = 0;
        self.jobs = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// Pushes `n` items of `owner`/`job`, values "owner/job/i", ids from `first`.
    fn fill(q: &mut FairQueue<String>, owner: &str, job: &str, n: usize, first: u64, t0: Instant) {
        for i in 0..n {
            let id = first + i as u64;
            q.push(&key(owner), &key(job), id, t0 + Duration::from_millis(id), format!("{owner}/{job}/{i}"));
        }
    }

    #[test]
    fn owners_take_turns_so_a_small_owner_is_served_at_once() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        fill(&mut q, "a", "big", 5_000, 0, t0);
        fill(&mut q, "b", "small", 20, 10_000, t0);
        let first: Vec<String> = (0..40).filter_map(|_| q.pop()).collect();
        let b_served = first.iter().filter(|v| v.starts_with("b/")).count();
        assert_eq!(b_served, 20, "every item of b within 40 pops: {first:?}");
        assert_eq!(q.len(), 5_000 - 20);
    }

    #[test]
    fn jobs_of_one_owner_take_turns_and_keep_their_order() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        fill(&mut q, "a", "j1", 3, 0, t0);
        fill(&mut q, "a", "j2", 2, 10, t0);
        let order: Vec<String> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["a/j1/0", "a/j2/0", "a/j1/1", "a/j2/1", "a/j1/2"]);
    }

    #[test]
    fn oldest_follows_pops_requeues_and_removals() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        fill(&mut q, "a", "j1", 2, 5, t0);
        fill(&mut q, "b", "j2", 2, 1, t0);
        assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(q.pop().as_deref(), Some("a/j1/0"));
        assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(q.pop().as_deref(), Some("b/j2/0"));
        assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(2)));
        // A requeued item goes back to its place and is the oldest again.
        q.push(&key("b"), &key("j2"), 1, t0 + Duration::from_millis(1), "b/j2/0".into());
        assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(q.remove_job(&key("j2")), ["b/j2/0", "b/j2/1"]);
        assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(6)));
        assert_eq!(q.owners(), 1);
        assert_eq!(q.pop().as_deref(), Some("a/j1/1"));
        assert_eq!((q.oldest(), q.len(), q.owners()), (None, 0, 0));
    }

    #[test]
    fn pop_owner_takes_one_owners_items_then_passes_the_turn() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        fill(&mut q, "a", "j", 5, 0, t0);
        fill(&mut q, "b", "k", 2, 10, t0);
        assert_eq!(q.pop_owner(3), ["a/j/0", "a/j/1", "a/j/2"]);
        assert_eq!(q.pop_owner(3), ["b/k/0", "b/k/1"]);
        assert_eq!(q.pop_owner(3), ["a/j/3", "a/j/4"]);
        assert!(q.pop_owner(3).is_empty());
    }

    #[test]
    fn an_old_job_at_the_top_does_not_let_stale_heads_pile_up() {
        let t0 = Instant::now();
        let at = |id: u64| t0 + Duration::from_millis(id);
        let mut q: FairQueue<u64> = FairQueue::default();
        // A big job accepted at once: its head stays the oldest item while it drains.
        for id in 0..5_000 {
            q.push(&key("a"), &key("old"), id, at(0), id);
        }
        // A stream of one-item requests of another owner, served in turn with the big job.
        for i in 0..4_000u64 {
            let request = 10_000 + i;
            q.push(&key("b"), &key(&format!("req-{i}")), request, at(request), request);
            q.pop();
            q.pop();
            assert_eq!(q.oldest(), Some(at(0)), "oldest after {i} rounds");
            assert!(q.heads.len() <= 2 * q.jobs + 64, "{} heads for {} jobs", q.heads.len(), q.jobs);
        }
    }

    #[test]
    fn top_owners_are_the_deepest() {
        let t0 = Instant::now();
        let mut q = FairQueue::default();
        fill(&mut q, "a", "j", 1, 0, t0);
        fill(&mut q, "b", "j", 3, 10, t0);
        fill(&mut q, "c", "j", 2, 20, t0);
        assert_eq!(q.top_owners(2), [(key("b"), 3), (key("c"), 2)]);
    }

    /// A model test: random pushes, pops, owner pops and job removals of several owners and jobs
    /// against a plain list. Nothing is lost or duplicated, each job keeps acceptance order, and
    /// `oldest` is exact; then, with every owner holding items, any run of pops as long as there
    /// are owners serves each owner once (no owner starved).
    #[test]
    fn model_nothing_lost_order_kept_no_owner_starved() {
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(7);
        for _round in 0..200 {
            let mut q: FairQueue<(u64, usize, usize)> = FairQueue::default();
            let mut model: Vec<(u64, usize, usize)> = Vec::new(); // (id, owner, job)
            let mut next_id = 0u64;
            for _step in 0..300 {
                match rng.u8(0..10) {
                    0..=4 => {
                        let (owner, job) = (rng.usize(0..4), rng.usize(0..3));
                        let n = rng.usize(1..6);
                        for _ in 0..n {
                            next_id += 1;
                            let at = t0 + Duration::from_millis(next_id);
                            let (o, j) = (key(&owner.to_string()), key(&format!("{owner}-{job}")));
                            q.push(&o, &j, next_id, at, (next_id, owner, job));
                            model.push((next_id, owner, job));
                        }
                    }
                    5..=7 => {
                        if let Some((id, owner, job)) = q.pop() {
                            let at = model.iter().position(|m| m.0 == id).expect("popped item was waiting");
                            let removed = model.remove(at);
                            assert_eq!(removed, (id, owner, job));
                            // Within its job, nothing older was left behind.
                            assert!(!model.iter().any(|m| m.1 == owner && m.2 == job && m.0 < id));
                        }
                    }
                    8 => {
                        let got = q.pop_owner(rng.usize(1..5));
                        let owner = got.first().map(|g| g.1);
                        for (id, o, _) in &got {
                            assert_eq!(Some(*o), owner, "pop_owner mixed owners");
                            let at = model.iter().position(|m| m.0 == *id).expect("was waiting");
                            model.remove(at);
                        }
                    }
                    _ => {
                        let (owner, job) = (rng.usize(0..4), rng.usize(0..3));
                        let removed = q.remove_job(&key(&format!("{owner}-{job}")));
                        let expected: Vec<u64> =
                            model.iter().filter(|m| m.1 == owner && m.2 == job).map(|m| m.0).collect();
                        assert_eq!(removed.iter().map(|r| r.0).collect::<Vec<_>>(), expected);
                        model.retain(|m| !(m.1 == owner && m.2 == job));
                    }
                }
                assert_eq!(q.len(), model.len());
                let oldest = model.iter().map(|m| t0 + Duration::from_millis(m.0)).min();
                assert_eq!(q.oldest(), oldest);
            }
            // Fairness: with every owner holding items, any window of pops of length `owners`
            // serves each owner once.
            let mut q2: FairQueue<usize> = FairQueue::default();
            for owner in 0..4usize {
                for i in 0..(10 + owner * 50) {
                    let id = (owner * 1_000 + i) as u64;
                    q2.push(&key(&owner.to_string()), &key("j"), id, t0, owner);
                }
            }
            let window: Vec<usize> = (0..4).filter_map(|_| q2.pop()).collect();
            let mut sorted = window.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3]);
        }
    }
}
