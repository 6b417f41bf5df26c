//! The simulated upstream: configurable latency, output length, and fault injection, with answers
//! that mention their prompt so tests can check order and completeness.
//!
//! [`MockProvider`] runs in-process (the default upstream, so ferry works with no key and no
//! network); `ferry mock-upstream` ([`crate::mock_upstream`]) serves the same [`answer`] and the
//! same [`FaultRates`] draws over HTTP. The in-process mock sits on the hot path of a
//! 100,000 prompts/s benchmark, so a call with zero latency takes no lock and never sleeps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{CallFuture, CallReply, CallRequest, Provider, ProviderError, RateHints, Role, Usage};
use crate::config::MockConfig;
use crate::core::combine;

/// The words every mock answer starts with, before the prompt it answers.
pub const ANSWER_PREFIX: &str = "mock answer to: ";

/// Words appended, in turn, to pad an answer to its token count.
const FILLER: [&str; 8] = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit"];

/// The mock's answer to `request`, the same in-process and over HTTP.
///
/// A combined call ([`combine::parse_request`]) gets a JSON object with one
/// `"mock answer to: {prompt}"` per prompt, keyed by the prompt's id, in order. Any other call gets
/// `"mock answer to: {last user message}"` padded with filler words to `output_tokens` words
/// (about one token per word), capped by the request's `max_tokens`. Prompt tokens are estimated
/// as a quarter of the characters of all messages; completion tokens are the padded length, or
/// the word count when the answer is longer.
pub fn answer(request: &CallRequest, output_tokens: u32) -> CallReply {
    let text = match combine::parse_request(&request.messages) {
        Some(prompts) => {
            let entries: Vec<(String, String)> =
                prompts.into_iter().map(|(id, p)| (id, format!("{ANSWER_PREFIX}{p}"))).collect();
            object_text(&entries)
        }
        None => {
            let target = request.max_tokens.map_or(output_tokens, |cap| cap.min(output_tokens));
            padded_answer(last_user_message(request), target)
        }
    };
    let chars: usize = request.messages.iter().map(|m| m.content.chars().count()).sum();
    let words = u32::try_from(text.split_whitespace().count()).unwrap_or(u32::MAX);
    let usage = Usage {
        prompt_tokens: u32::try_from(chars / 4).unwrap_or(u32::MAX).max(1),
        completion_tokens: words.max(output_tokens),
    };
    CallReply { text, usage: Some(usage), hints: RateHints::default() }
}

/// A JSON object written from `entries` in their order, duplicates kept (as a model may write).
fn object_text(entries: &[(String, String)]) -> String {
    let fields: Vec<String> = entries
        .iter()
        .map(|(key, value)| {
            // Serializing a string cannot fail.
            let key = serde_json::to_string(key).unwrap_or_default();
            let value = serde_json::to_string(value).unwrap_or_default();
            format!("{key}: {value}")
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// Whether the draw `bits`, hashed with `salt`, falls under `rate`; also returns the hash for
/// further choices. `bits` also picks the latency jitter, so each use hashes it apart.
fn roll(bits: u64, salt: u64, rate: f64) -> Option<u64> {
    if rate <= 0.0 {
        return None;
    }
    let roll = splitmix64(bits ^ salt);
    (((roll >> 11) as f64 / (1u64 << 53) as f64) < rate).then_some(roll)
}

/// The garbled reply `garble_rate` asks for, when `request` is a combined call and the draw
/// (`bits`) falls under `rate`: text that is not an object of answers keyed by id — by the draw,
/// either prose or a bare array of the answers. `None` for any other call.
pub fn garble(request: &CallRequest, rate: f64, bits: u64) -> Option<String> {
    let prompts = combine::parse_request(&request.messages)?;
    let roll = roll(bits, 0, rate)?;
    if roll & 1 == 0 {
        return Some("I am sorry, I cannot answer these prompts in the requested format.".into());
    }
    let answers: Vec<String> = prompts.iter().map(|(_, p)| format!("{ANSWER_PREFIX}{p}")).collect();
    serde_json::to_string(&answers).ok()
}

/// How [`misalign`] spoils a combined reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misalignment {
    /// The entries in reverse order, each still under its own id.
    Shuffled,
    /// The last id left out.
    Dropped,
    /// The first id answered twice: its own answer, then the next prompt's.
    Duplicated,
    /// The first id renamed to one nobody asked for.
    Renamed,
}

/// The misaligned reply `misalign_rate` asks for, when `request` is a combined call and the draw
/// falls under `rate`: the kind of [`Misalignment`] picked by the draw, with the reply text.
pub fn misalign(request: &CallRequest, rate: f64, bits: u64) -> Option<(Misalignment, String)> {
    let prompts = combine::parse_request(&request.messages)?;
    let roll = roll(bits, 0x5EED_0001, rate)?;
    let mut entries: Vec<(String, String)> =
        prompts.iter().map(|(id, p)| (id.clone(), format!("{ANSWER_PREFIX}{p}"))).collect();
    let kind =
        [Misalignment::Shuffled, Misalignment::Dropped, Misalignment::Duplicated, Misalignment::Renamed]
            [(roll % 4) as usize];
    match kind {
        Misalignment::Shuffled => entries.reverse(),
        Misalignment::Dropped => drop(entries.pop()),
        Misalignment::Duplicated => {
            if let Some(next) = entries.get(1).map(|(_, answer)| answer.clone()) {
                entries.insert(1, (entries[0].0.clone(), next));
            }
        }
        Misalignment::Renamed => {
            if let Some(first) = entries.first_mut() {
                first.0 = "answer_1".into();
            }
        }
    }
    Some((kind, object_text(&entries)))
}

/// The wrong reply `wrong_answer_rate` asks for, when `request` is a combined call of two or more
/// prompts and the draw falls under `rate`: every id present, each with the next prompt's answer.
pub fn wrong_answers(request: &CallRequest, rate: f64, bits: u64) -> Option<String> {
    let prompts = combine::parse_request(&request.messages)?;
    if prompts.len() < 2 {
        return None;
    }
    roll(bits, 0x5EED_0002, rate)?;
    let n = prompts.len();
    let entries: Vec<(String, String)> = (0..n)
        .map(|i| (prompts[i].0.clone(), format!("{ANSWER_PREFIX}{}", prompts[(i + 1) % n].1)))
        .collect();
    Some(object_text(&entries))
}

/// A combined reply spoiled as the rates ask, if the draw says so: garbled first, then
/// misaligned, then wrong answers. `None`: answer as asked.
pub fn spoil(request: &CallRequest, rates: &SpoilRates, bits: u64) -> Option<(Spoiled, String)> {
    if let Some(text) = garble(request, rates.garble, bits) {
        return Some((Spoiled::Garbled, text));
    }
    if let Some((kind, text)) = misalign(request, rates.misalign, bits) {
        return Some((Spoiled::Misaligned(kind), text));
    }
    wrong_answers(request, rates.wrong, bits).map(|text| (Spoiled::Wrong, text))
}

/// The shares of combined replies the mock spoils, each drawn apart from the fault rates.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpoilRates {
    /// Not an object of answers by id.
    pub garble: f64,
    /// Ids shuffled, dropped, duplicated or renamed.
    pub misalign: f64,
    /// Answers moved to the next id.
    pub wrong: f64,
}

impl SpoilRates {
    /// True when no reply is spoiled.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// How a combined reply was spoiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spoiled {
    /// See [`garble`].
    Garbled,
    /// See [`misalign`].
    Misaligned(Misalignment),
    /// See [`wrong_answers`].
    Wrong,
}

/// The text of the last user message (empty when there is none).
fn last_user_message(request: &CallRequest) -> &str {
    request.messages.iter().rev().find(|m| m.role == Role::User).map_or("", |m| m.content.as_str())
}

/// `"mock answer to: {prompt}"` followed by filler words until it has `target` words.
fn padded_answer(prompt: &str, target: u32) -> String {
    let mut text = String::with_capacity(ANSWER_PREFIX.len() + prompt.len() + 8 * target as usize);
    text.push_str(ANSWER_PREFIX);
    text.push_str(prompt);
    let words = text.split_whitespace().count();
    for filler in FILLER.iter().cycle().take((target as usize).saturating_sub(words)) {
        text.push(' ');
        text.push_str(filler);
    }
    text
}

/// A failure the mock can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 500.
    Server,
    /// HTTP 429 with a retry delay.
    RateLimited,
    /// HTTP 503.
    Overloaded,
    /// HTTP 200 whose body is not the API's JSON.
    Malformed,
    /// The connection closes before a complete reply.
    Dropped,
    /// No reply in any sane time.
    Timeout,
}

/// How often each [`Fault`] is injected; probabilities in `0.0..=1.0` whose sum is at most 1.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// Share of calls answered with [`Fault::Server`].
    pub server: f64,
    /// Share of calls answered with [`Fault::RateLimited`].
    pub rate_limited: f64,
    /// Share of calls answered with [`Fault::Overloaded`].
    pub overloaded: f64,
    /// Share of calls answered with [`Fault::Malformed`].
    pub malformed: f64,
    /// Share of calls answered with [`Fault::Dropped`].
    pub dropped: f64,
    /// Share of calls answered with [`Fault::Timeout`].
    pub timeout: f64,
}

impl FaultRates {
    /// The fault for a uniform `draw` in `0.0..1.0`: each fault owns a slice of the unit
    /// interval as wide as its rate, so one draw decides and the seeded sequence is reproducible.
    pub fn pick(&self, draw: f64) -> Option<Fault> {
        let slices = [
            (self.server, Fault::Server),
            (self.rate_limited, Fault::RateLimited),
            (self.overloaded, Fault::Overloaded),
            (self.malformed, Fault::Malformed),
            (self.dropped, Fault::Dropped),
            (self.timeout, Fault::Timeout),
        ];
        let mut edge = 0.0;
        for (rate, fault) in slices {
            edge += rate;
            if draw < edge {
                return Some(fault);
            }
        }
        None
    }

    /// True when no fault can be drawn, so the draw can be skipped.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// A seeded stream of random draws without a lock: draw `n` is a hash of the seed and `n`, so
/// concurrent callers only share one atomic counter and a seed replays the same sequence.
#[derive(Debug)]
pub struct Draws {
    seed: u64,
    next: AtomicU64,
}

impl Draws {
    /// A stream starting at draw 0 for `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed, next: AtomicU64::new(0) }
    }

    /// The next draw: a uniform `f64` in `0.0..1.0` and an independent uniform `u64`.
    pub fn next(&self) -> (f64, u64) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let first = splitmix64(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let second = splitmix64(first);
        // The top 53 bits fill an f64 mantissa exactly, giving a uniform value below 1.0.
        ((first >> 11) as f64 / (1u64 << 53) as f64, second)
    }
}

/// The splitmix64 finaliser: a fast, well-mixed 64-bit hash.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Latency `base_ms` plus a uniform `0..=jitter_ms` taken from `bits`.
pub fn latency(base_ms: u64, jitter_ms: u64, bits: u64) -> Duration {
    let jitter = if jitter_ms == 0 { 0 } else { bits % (jitter_ms + 1) };
    Duration::from_millis(base_ms.saturating_add(jitter))
}

/// The in-process simulated upstream (`provider = "mock"`).
#[derive(Debug)]
pub struct MockProvider {
    config: MockConfig,
    faults: FaultRates,
    spoils: SpoilRates,
    draws: Draws,
    /// With `capacity`: the slots a call holds for its latency; calls beyond wait in turn.
    slots: Option<Arc<Slots>>,
}

/// A mock server's `capacity` slots, and the calls waiting for one.
#[derive(Debug)]
struct Slots {
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// The most calls that may wait; one more is answered 503 at once. 0: no limit.
    queue_limit: usize,
}

impl Slots {
    /// Waits for a slot in turn and returns it, or refuses at once when `queue_limit` calls
    /// already wait. The semaphore is never closed, so acquiring cannot fail.
    async fn take(&self) -> Result<Option<OwnedSemaphorePermit>, ProviderError> {
        let full = self.permits.available_permits() == 0
            && self.queue_limit > 0
            && self.waiting.load(Ordering::Relaxed) >= self.queue_limit;
        if full {
            return Err(ProviderError::Overloaded { message: "mock: queue full".into() });
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let permit = Arc::clone(&self.permits).acquire_owned().await.ok();
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        Ok(permit)
    }
}

impl MockProvider {
    /// A mock answering with `config`'s latency, output length and fault rates.
    pub fn new(config: MockConfig) -> Self {
        let faults = FaultRates {
            server: config.error_rate,
            rate_limited: config.rate_limit_rate,
            overloaded: config.overload_rate,
            malformed: config.malformed_rate,
            dropped: config.drop_rate,
            timeout: config.timeout_rate,
        };
        let draws = Draws::new(config.seed);
        let spoils = SpoilRates {
            garble: config.garble_rate,
            misalign: config.misalign_rate,
            wrong: config.wrong_answer_rate,
        };
        let slots = (config.capacity > 0).then(|| {
            Arc::new(Slots {
                permits: Arc::new(Semaphore::new(config.capacity as usize)),
                waiting: AtomicUsize::new(0),
                queue_limit: config.queue_limit as usize,
            })
        });
        Self { config, faults, spoils, draws, slots }
    }
}

impl Provider for MockProvider {
    fn call(&self, request: CallRequest) -> CallFuture {
        let needs_draw =
            !self.faults.is_zero() || self.config.latency_jitter_ms > 0 || !self.spoils.is_zero();
        let (draw, bits) = if needs_draw { self.draws.next() } else { (1.0, 0) };
        let fault = self.faults.pick(draw);
        let delay = latency(self.config.latency_ms, self.config.latency_jitter_ms, bits);
        let output_tokens = self.config.output_tokens;
        let retry_after = Duration::from_millis(self.config.retry_after_ms);
        let spoils = self.spoils;
        let slots = self.slots.clone();
        Box::pin(async move {
            // A 429 comes back at once, as real rate limiters answer before doing any work.
            if fault == Some(Fault::RateLimited) {
                return Err(ProviderError::RateLimited {
                    retry_after: Some(retry_after),
                    hints: Box::default(),
                });
            }
            // A server with `capacity` slots: the call waits for one (in turn), then runs its
            // latency holding it; with `queue_limit`, one that would wait beyond it gets a 503.
            let _slot = match &slots {
                Some(slots) => slots.take().await?,
                None => None,
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            // In-process there is no connection to hold, so a timeout ends after the latency.
            match fault {
                Some(Fault::Server) => {
                    Err(ProviderError::Server { status: 500, message: "mock: injected server error".into() })
                }
                Some(Fault::Overloaded) => {
                    Err(ProviderError::Overloaded { message: "mock: injected overload".into() })
                }
                Some(Fault::Malformed) => {
                    Err(ProviderError::Malformed { message: "mock: injected malformed reply".into() })
                }
                Some(Fault::Dropped) => {
                    Err(ProviderError::Dropped { message: "mock: injected dropped connection".into() })
                }
                Some(Fault::Timeout) => Err(ProviderError::Timeout),
                Some(Fault::RateLimited) | None => {
                    let mut reply = answer(&request, output_tokens);
                    if let Some((_, text)) = spoil(&request, &spoils, bits) {
                        reply.text = text;
                    }
                    Ok(reply)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ChatMessage;

    fn request(messages: Vec<ChatMessage>) -> CallRequest {
        CallRequest { model: "mock".into(), messages, ..CallRequest::default() }
    }

    #[test]
    fn answer_mentions_prompt_and_is_padded() {
        let reply = answer(&request(vec![ChatMessage::user("what is 2+2?")]), 10);
        assert!(reply.text.starts_with("mock answer to: what is 2+2?"), "{}", reply.text);
        assert_eq!(reply.text.split_whitespace().count(), 10);
        assert_eq!(reply.usage, Some(Usage { prompt_tokens: 3, completion_tokens: 10 }));
    }

    #[test]
    fn answer_respects_max_tokens_but_keeps_the_prompt() {
        let mut req = request(vec![ChatMessage::user("one two three")]);
        req.max_tokens = Some(2);
        let reply = answer(&req, 50);
        assert_eq!(reply.text, "mock answer to: one two three");
        assert_eq!(reply.usage.map(|u| u.completion_tokens), Some(50));
    }

    #[test]
    fn combined_call_gets_one_answer_per_prompt_by_id() {
        let reply = answer(&request(combine::build(&["first", "second \"q\""])), 8);
        assert!(reply.text.starts_with("{\"q1\": "), "{}", reply.text);
        let split = combine::split(&reply.text, 2).expect("combined reply splits");
        let want = ["mock answer to: first", "mock answer to: second \"q\""];
        assert_eq!(split.answers, want.map(|a| Some(a.to_string())));
    }

    #[test]
    fn misaligned_replies_are_never_read_as_wrong_answers() {
        let request = request(combine::build(&["a", "b", "c"]));
        let mut kinds = std::collections::HashSet::new();
        for bits in 0..200 {
            let Some((kind, text)) = misalign(&request, 1.0, bits) else { panic!("rate 1.0 misaligns") };
            kinds.insert(format!("{kind:?}"));
            let split = combine::split(&text, 3).expect("still an object");
            for (answer, prompt) in split.answers.iter().zip(["a", "b", "c"]) {
                if let Some(answer) = answer {
                    assert_eq!(answer, &format!("{ANSWER_PREFIX}{prompt}"), "{kind:?}: {text}");
                }
            }
            let unanswered = split.unanswered();
            match kind {
                Misalignment::Shuffled => assert_eq!(unanswered, 0, "{text}"),
                _ => assert_eq!(unanswered, 1, "{kind:?}: {text}"),
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
    }

    #[test]
    fn wrong_answers_keep_every_id() {
        let request = request(combine::build(&["a", "b"]));
        let text = wrong_answers(&request, 1.0, 7).expect("rate 1.0");
        let split = combine::split(&text, 2).expect("an object");
        assert_eq!(split.answers, vec![Some(format!("{ANSWER_PREFIX}b")), Some(format!("{ANSWER_PREFIX}a"))]);
        assert_eq!(wrong_answers(&request, 0.0, 7), None);
    }

    #[tokio::test(start_paused = true)]
    async fn capacity_queues_calls_beyond_it() {
        let mock =
            Arc::new(MockProvider::new(MockConfig { latency_ms: 200, capacity: 2, ..MockConfig::default() }));
        let start = tokio::time::Instant::now();
        let calls: Vec<_> = (0..5)
            .map(|i| {
                let call = mock.call(request(vec![ChatMessage::user(format!("{i}"))]));
                tokio::spawn(async move { call.await.map(|_| start.elapsed().as_millis()) })
            })
            .collect();
        let mut ended = Vec::new();
        for call in calls {
            ended.push(call.await.expect("no panic").expect("an answer"));
        }
        // Two at a time, each 200 ms: 200, 200, 400, 400, 600.
        assert_eq!(ended, [200, 200, 400, 400, 600]);
    }

    #[test]
    fn prompt_tokens_are_at_least_one() {
        let reply = answer(&request(vec![ChatMessage::user("")]), 1);
        assert_eq!(reply.usage.map(|u| u.prompt_tokens), Some(1));
    }

    #[test]
    fn fault_slices_follow_rates() {
        let rates = FaultRates { server: 0.1, rate_limited: 0.2, timeout: 0.1, ..FaultRates::default() };
        assert_eq!(rates.pick(0.05), Some(Fault::Server));
        assert_eq!(rates.pick(0.25), Some(Fault::RateLimited));
        assert_eq!(rates.pick(0.35), Some(Fault::Timeout));
        assert_eq!(rates.pick(0.45), None);
        assert_eq!(FaultRates::default().pick(0.0), None);
    }

    #[test]
    fn draws_replay_for_a_seed_and_are_uniform() {
        let (a, b) = (Draws::new(7), Draws::new(7));
        let first: Vec<f64> = (0..100).map(|_| a.next().0).collect();
        let again: Vec<f64> = (0..100).map(|_| b.next().0).collect();
        assert_eq!(first, again);
        let c = Draws::new(7);
        let below_half = (0..10_000).filter(|_| c.next().0 < 0.5).count();
        assert!((4_700..5_300).contains(&below_half), "{below_half}");
    }

    #[test]
    fn latency_adds_bounded_jitter() {
        assert_eq!(latency(10, 0, 12345), Duration::from_millis(10));
        for bits in [0, 1, 5, u64::MAX] {
            let d = latency(10, 5, bits);
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15));
        }
    }

    #[tokio::test]
    async fn injected_faults_show_up_at_their_rates() {
        let mock = MockProvider::new(MockConfig {
            error_rate: 0.25,
            rate_limit_rate: 0.25,
            retry_after_ms: 1500,
            ..MockConfig::default()
        });
        let (mut ok, mut server, mut limited) = (0, 0, 0);
        for _ in 0..2000 {
            match mock.call(request(vec![ChatMessage::user("hi")])).await {
                Ok(_) => ok += 1,
                Err(ProviderError::Server { status: 500, .. }) => server += 1,
                Err(ProviderError::RateLimited { retry_after, .. }) => {
                    assert_eq!(retry_after, Some(Duration::from_millis(1500)));
                    limited += 1;
                }
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        for count in [server, limited] {
            assert!((400..600).contains(&count), "{ok} {server} {limited}");
        }
    }

    #[tokio::test]
    async fn every_fault_knob_is_injected_in_process() {
        let knobs = [
            (MockConfig { overload_rate: 1.0, ..MockConfig::default() }, "overloaded"),
            (MockConfig { malformed_rate: 1.0, ..MockConfig::default() }, "malformed"),
            (MockConfig { drop_rate: 1.0, ..MockConfig::default() }, "dropped"),
            (MockConfig { timeout_rate: 1.0, ..MockConfig::default() }, "timeout"),
        ];
        for (config, kind) in knobs {
            let error = MockProvider::new(config).call(request(vec![ChatMessage::user("hi")])).await;
            assert_eq!(error.err().map(|e| e.kind()), Some(kind));
        }
    }

    #[tokio::test]
    async fn garble_spoils_combined_replies_only() {
        let mock = MockProvider::new(MockConfig { garble_rate: 1.0, ..MockConfig::default() });
        let (mut prose, mut too_long) = (0, 0);
        for _ in 0..50 {
            let reply = mock.call(request(combine::build(&["a", "b"]))).await.expect("a 200 reply");
            match combine::split(&reply.text, 2) {
                Err(combine::SplitError::NotAnObject) if reply.text.starts_with('[') => too_long += 1,
                Err(combine::SplitError::NotAnObject) => prose += 1,
                other => panic!("a garbled reply split as {other:?}"),
            }
        }
        assert!(prose > 0 && too_long > 0, "{prose} {too_long}");
        let plain = mock.call(request(vec![ChatMessage::user("plain")])).await.expect("a reply");
        assert!(plain.text.starts_with("mock answer to: plain"), "{}", plain.text);
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_simulated() {
        let mock = MockProvider::new(MockConfig { latency_ms: 300, ..MockConfig::default() });
        let start = tokio::time::Instant::now();
        let reply = mock.call(request(vec![ChatMessage::user("slow")])).await;
        assert!(reply.is_ok());
        assert_eq!(start.elapsed(), Duration::from_millis(300));
    }
}
