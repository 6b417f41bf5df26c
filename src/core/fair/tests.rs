//! The fair queue's behaviour: turns, order, the oldest item, removals, and the slots under it.

use std::time::Duration;

use super::*;

/// A test item: its id, when it was accepted, and what the test compares.
#[derive(Debug, Clone, PartialEq)]
struct Entry<V> {
    id: u64,
    at: Instant,
    value: V,
}

impl<V> Accepted for Entry<V> {
    fn id(&self) -> u64 {
        self.id
    }
    fn accepted_at(&self) -> Instant {
        self.at
    }
}

fn key(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn values<V>(entries: Vec<Entry<V>>) -> Vec<V> {
    entries.into_iter().map(|e| e.value).collect()
}

/// Submits `n` items of `owner`/`job` one by one, values "owner/job/i", ids from `first`,
/// accepted `id` ms after `t0`.
fn fill(q: &mut FairQueue<Entry<String>>, owner: &str, job: &str, n: usize, first: u64, t0: Instant) {
    for i in 0..n {
        let id = first + i as u64;
        let entry = Entry { id, at: t0 + Duration::from_millis(id), value: format!("{owner}/{job}/{i}") };
        q.push(&key(owner), &key(job), entry);
    }
}

fn pop_value<V>(q: &mut FairQueue<Entry<V>>) -> Option<V> {
    q.pop().map(|e| e.value)
}

#[test]
fn owners_take_turns_so_a_small_owner_is_served_at_once() {
    let t0 = Instant::now();
    let mut q = FairQueue::default();
    fill(&mut q, "a", "big", 5_000, 0, t0);
    fill(&mut q, "b", "small", 20, 10_000, t0);
    let first: Vec<String> = (0..40).filter_map(|_| pop_value(&mut q)).collect();
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
    let order: Vec<String> = std::iter::from_fn(|| pop_value(&mut q)).collect();
    assert_eq!(order, ["a/j1/0", "a/j2/0", "a/j1/1", "a/j2/1", "a/j1/2"]);
}

#[test]
fn oldest_follows_pops_requeues_and_removals() {
    let t0 = Instant::now();
    let mut q = FairQueue::default();
    fill(&mut q, "a", "j1", 2, 5, t0);
    fill(&mut q, "b", "j2", 2, 1, t0);
    assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(1)));
    assert_eq!(pop_value(&mut q).as_deref(), Some("a/j1/0"));
    assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(1)));
    let first_of_b = q.pop().expect("b waits");
    assert_eq!(first_of_b.value, "b/j2/0");
    assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(2)));
    // A requeued item goes back to its place and is the oldest again.
    q.push(&key("b"), &key("j2"), first_of_b);
    assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(1)));
    assert_eq!(values(q.remove_job(&key("j2"))), ["b/j2/0", "b/j2/1"]);
    assert_eq!(q.oldest(), Some(t0 + Duration::from_millis(6)));
    assert_eq!(q.owners(), 1);
    assert_eq!(pop_value(&mut q).as_deref(), Some("a/j1/1"));
    assert_eq!((q.oldest(), q.len(), q.owners()), (None, 0, 0));
}

#[test]
fn a_submission_is_kept_whole_and_served_in_order() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut q = FairQueue::default();
    let submission: Vec<Entry<u64>> = (1..=4).map(|id| Entry { id, at: at(id), value: id }).collect();
    let buffer = submission.as_ptr();
    q.extend(&key("a"), &key("j"), submission);
    // The submitted vector is the job's queue: nothing was copied.
    let kept = q.jobs[0].chunks.front().map(|chunk| chunk.as_slices().0.as_ptr());
    assert_eq!(kept, Some(buffer));
    q.extend(&key("a"), &key("j"), (5..=6).map(|id| Entry { id, at: at(id), value: id }).collect());
    assert_eq!(q.jobs[0].chunks.len(), 2);
    assert_eq!(values(q.pop_many(3)), [1, 2, 3]);
    // A requeued item goes before the rest of its submission, and one accepted between two
    // waiting items (out of order) goes between them.
    q.push(&key("a"), &key("j"), Entry { id: 3, at: at(3), value: 3 });
    q.extend(
        &key("a"),
        &key("j"),
        vec![Entry { id: 9, at: at(9), value: 9 }, Entry { id: 7, at: at(7), value: 7 }],
    );
    q.push(&key("a"), &key("j"), Entry { id: 8, at: at(8), value: 8 });
    assert_eq!(q.oldest(), Some(at(3)));
    assert_eq!(values(q.pop_many(10)), [3, 4, 5, 6, 7, 8, 9]);
    assert_eq!((q.len(), q.oldest(), q.live_jobs), (0, None, 0));
}

#[test]
fn pop_owner_takes_one_owners_items_then_passes_the_turn() {
    let t0 = Instant::now();
    let mut q = FairQueue::default();
    fill(&mut q, "a", "j", 5, 0, t0);
    fill(&mut q, "b", "k", 2, 10, t0);
    assert_eq!(values(q.pop_owner(3)), ["a/j/0", "a/j/1", "a/j/2"]);
    assert_eq!(values(q.pop_owner(3)), ["b/k/0", "b/k/1"]);
    assert_eq!(values(q.pop_owner(3)), ["a/j/3", "a/j/4"]);
    assert!(q.pop_owner(3).is_empty());
}

#[test]
fn pop_many_takes_the_same_turns_as_pops() {
    let t0 = Instant::now();
    let (mut a, mut b) = (FairQueue::default(), FairQueue::default());
    for q in [&mut a, &mut b] {
        fill(q, "a", "j1", 4, 0, t0);
        fill(q, "a", "j2", 2, 10, t0);
        fill(q, "b", "k", 3, 20, t0);
    }
    let popped: Vec<String> = std::iter::from_fn(|| pop_value(&mut a)).take(7).collect();
    assert_eq!(values(b.pop_many(7)), popped);
    assert_eq!(values(b.pop_many(100)), std::iter::from_fn(|| pop_value(&mut a)).collect::<Vec<_>>());
    assert!(b.pop_many(3).is_empty());
}

#[test]
fn an_old_job_at_the_top_does_not_let_stale_heads_pile_up() {
    let t0 = Instant::now();
    let at = |id: u64| t0 + Duration::from_millis(id);
    let mut q: FairQueue<Entry<u64>> = FairQueue::default();
    // A big job accepted at once: its head stays the oldest item while it drains.
    q.extend(&key("a"), &key("old"), (0..5_000).map(|id| Entry { id, at: at(0), value: id }).collect());
    // A stream of one-item requests of another owner, served in turn with the big job.
    for i in 0..4_000u64 {
        let request = 10_000 + i;
        let entry = Entry { id: request, at: at(request), value: request };
        q.push(&key("b"), &key(&format!("req-{i}")), entry);
        q.pop();
        q.pop();
        assert_eq!(q.oldest(), Some(at(0)), "oldest after {i} rounds");
        assert!(q.heads.len() <= 2 * q.live_jobs + 64, "{} heads for {} jobs", q.heads.len(), q.live_jobs);
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

#[test]
fn slots_of_owners_and_jobs_that_ran_out_are_reused() {
    let t0 = Instant::now();
    let mut q: FairQueue<Entry<u64>> = FairQueue::default();
    // A thousand one-item requests of changing owners, never more than two waiting at once:
    // two owner slots and two job slots serve them all.
    for i in 0..1_000u64 {
        let (owner, job) = (key(&format!("owner-{}", i % 7)), key(&format!("req-{i}")));
        q.push(&owner, &job, Entry { id: i, at: t0 + Duration::from_millis(i), value: i });
        if i % 2 == 1 {
            assert_eq!(values(q.pop_many(2)), [i - 1, i]);
        }
    }
    assert!(q.is_empty());
    assert_eq!((q.owners.len(), q.jobs.len()), (2, 2));
    assert_eq!((q.index.len(), q.ring.len(), q.live_jobs), (0, 0, 0));
    // Freed slots hold no ids (nothing keeps a finished job's or owner's name alive).
    assert!(q.owners.iter().all(|o| o.id.is_none() && o.jobs.is_empty() && o.ring.is_empty()));
    assert!(q.jobs.iter().all(|j| j.id.is_none() && j.chunks.is_empty()));
}

#[test]
fn a_removed_jobs_head_is_stale_even_when_its_slot_is_reused_with_the_same_item_id() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut q: FairQueue<Entry<&str>> = FairQueue::default();
    q.push(&key("a"), &key("old"), Entry { id: 1, at: at(1), value: "old" });
    q.push(&key("b"), &key("other"), Entry { id: 2, at: at(3), value: "other" });
    assert_eq!(q.oldest(), Some(at(1)));
    assert_eq!(values(q.remove_job(&key("old"))), ["old"]);
    // The new job takes the removed job's slot and even an item id it had: only the slot's
    // generation tells the old heap entry from the new job's head.
    q.push(&key("a"), &key("new"), Entry { id: 1, at: at(5), value: "new" });
    assert_eq!(q.jobs.len(), 2, "the freed job slot was reused");
    assert_eq!(q.oldest(), Some(at(3)));
    // Owner a came back after b: b's turn is first.
    assert_eq!(values(q.pop_many(2)), ["other", "new"]);
    assert_eq!(q.oldest(), None);
}

#[test]
fn a_job_that_ran_out_and_came_back_is_served_and_timed_afresh() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let entry = |id: u64| Entry { id, at: at(id), value: id };
    let mut q: FairQueue<Entry<u64>> = FairQueue::default();
    q.push(&key("a"), &key("j"), entry(1));
    q.push(&key("b"), &key("k"), entry(2));
    assert_eq!(pop_value(&mut q), Some(1));
    // Job j (and owner a) ran out: a new submission under the same ids starts a new job in a
    // reused slot; its items wait behind b's turn.
    q.extend(&key("a"), &key("j"), vec![entry(3), entry(4)]);
    assert_eq!(q.oldest(), Some(at(2)));
    assert_eq!(pop_value(&mut q), Some(2));
    assert_eq!(q.oldest(), Some(at(3)));
    // A requeued item accepted before the ones waiting goes first again.
    q.push(&key("a"), &key("j"), entry(1));
    assert_eq!(q.oldest(), Some(at(1)));
    assert_eq!(values(q.pop_many(10)), [1, 3, 4]);
    assert!(q.heads.len() <= 2 * q.live_jobs + 64);
}

#[test]
fn removing_a_job_of_a_waiting_owner_keeps_the_owners_other_jobs_in_turn() {
    let t0 = Instant::now();
    let mut q = FairQueue::default();
    fill(&mut q, "a", "j1", 2, 0, t0);
    fill(&mut q, "a", "j2", 2, 10, t0);
    fill(&mut q, "b", "k", 2, 20, t0);
    assert_eq!(values(q.remove_job(&key("j1"))), ["a/j1/0", "a/j1/1"]);
    assert_eq!(q.top_owners(5), [(key("a"), 2), (key("b"), 2)]);
    fill(&mut q, "c", "m", 1, 30, t0);
    assert_eq!(values(q.pop_many(10)), ["a/j2/0", "b/k/0", "c/m/0", "a/j2/1", "b/k/1"]);
    assert!(q.drain().is_empty());
}

#[test]
fn drain_empties_the_queue_and_it_works_afterwards() {
    let t0 = Instant::now();
    let mut q = FairQueue::default();
    fill(&mut q, "a", "j", 3, 0, t0);
    fill(&mut q, "b", "k", 2, 10, t0);
    let mut all = values(q.drain());
    all.sort();
    assert_eq!(all, ["a/j/0", "a/j/1", "a/j/2", "b/k/0", "b/k/1"]);
    assert_eq!((q.len(), q.owners(), q.oldest()), (0, 0, None));
    fill(&mut q, "b", "k", 1, 20, t0);
    assert_eq!((pop_value(&mut q).as_deref(), q.oldest()), (Some("b/k/0"), None));
}

/// What the model test's items carry: (owner, job).
type Whose = (usize, usize);

/// A model test: random submissions, pops, owner pops, requeues and job removals of several
/// owners and jobs against a plain list. Nothing is lost or duplicated, each job keeps
/// acceptance order (a requeued item goes back to its place), and `oldest` is exact; then, with
/// every owner holding items, any run of pops as long as there are owners serves each owner
/// once (no owner starved).
#[test]
fn model_nothing_lost_order_kept_no_owner_starved() {
    let t0 = Instant::now();
    let at = |id: u64| t0 + Duration::from_millis(id);
    let mut rng = fastrand::Rng::with_seed(7);
    let names = |(owner, job): Whose| (key(&owner.to_string()), key(&format!("{owner}-{job}")));
    for _round in 0..200 {
        let mut q: FairQueue<Entry<Whose>> = FairQueue::default();
        let mut model: Vec<Entry<Whose>> = Vec::new();
        // Popped items not yet answered, which may come back (a requeue).
        let mut held: Vec<Entry<Whose>> = Vec::new();
        let mut next_id = 0u64;
        let taken = |entry: Entry<Whose>, model: &mut Vec<Entry<Whose>>, held: &mut Vec<Entry<Whose>>| {
            let place = model.iter().position(|m| m.id == entry.id).expect("popped item was waiting");
            assert_eq!(model.remove(place), entry);
            // Within its job, nothing older was left behind.
            assert!(!model.iter().any(|m| m.value == entry.value && m.id < entry.id));
            held.push(entry);
        };
        for _step in 0..300 {
            match rng.u8(0..11) {
                0..=4 => {
                    let whose = (rng.usize(0..4), rng.usize(0..3));
                    let submission: Vec<Entry<Whose>> = (0..rng.usize(1..6))
                        .map(|_| {
                            next_id += 1;
                            Entry { id: next_id, at: at(next_id), value: whose }
                        })
                        .collect();
                    model.extend(submission.iter().cloned());
                    let (o, j) = names(whose);
                    q.extend(&o, &j, submission);
                }
                5..=6 => {
                    if let Some(entry) = q.pop() {
                        taken(entry, &mut model, &mut held);
                    }
                }
                7 => {
                    let got = q.pop_owner(rng.usize(1..5));
                    let owner = got.first().map(|g| g.value.0);
                    for entry in got {
                        assert_eq!(Some(entry.value.0), owner, "pop_owner mixed owners");
                        taken(entry, &mut model, &mut held);
                    }
                }
                8 => {
                    if !held.is_empty() {
                        let entry = held.swap_remove(rng.usize(0..held.len()));
                        model.push(entry.clone());
                        let (o, j) = names(entry.value);
                        q.push(&o, &j, entry);
                    }
                }
                _ => {
                    let whose = (rng.usize(0..4), rng.usize(0..3));
                    let removed = q.remove_job(&names(whose).1);
                    let mut expected: Vec<u64> =
                        model.iter().filter(|m| m.value == whose).map(|m| m.id).collect();
                    expected.sort_unstable();
                    assert_eq!(removed.iter().map(|r| r.id).collect::<Vec<_>>(), expected);
                    model.retain(|m| m.value != whose);
                }
            }
            assert_eq!(q.len(), model.len());
            assert_eq!(q.oldest(), model.iter().map(|m| m.at).min());
        }
        // Fairness: with every owner holding items, any window of pops of length `owners`
        // serves each owner once.
        let mut q2: FairQueue<Entry<usize>> = FairQueue::default();
        for owner in 0..4usize {
            for i in 0..(10 + owner * 50) {
                let id = (owner * 1_000 + i) as u64;
                q2.push(&key(&owner.to_string()), &key("j"), Entry { id, at: t0, value: owner });
            }
        }
        let mut window: Vec<usize> = (0..4).filter_map(|_| pop_value(&mut q2)).collect();
        window.sort_unstable();
        assert_eq!(window, [0, 1, 2, 3]);
    }
}
