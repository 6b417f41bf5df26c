//! The console loop: terminal keys, metrics updates and a slow tick in; state changes and
//! commands out; a redraw only when something shown changed, at most [`FRAME`] apart, so an idle
//! console sleeps between one-second ticks.

use std::future::Future;
use std::io::Stdout;
use std::time::{Duration, Instant, SystemTime};

use crossterm::event::{Event, EventStream, KeyEvent, KeyEventKind};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::mpsc;

use super::command::{Call, Command, Controller};
use super::draw::draw;
use super::error::ConsoleError;
use super::input::handle_key;
use super::keys::{Action, action_for};
use super::source::Update;
use super::state::{Dashboard, Drain};
use super::view::ConfigView;

/// Shortest time between two frames (at most 10 a second under load).
pub const FRAME: Duration = Duration::from_millis(100);
/// The tick: clocks, sparkline samples, the ages shown.
pub const TICK: Duration = Duration::from_secs(1);

/// Applies one update; true when the screen should be redrawn. Asks `controller` for the
/// configuration again when another client changed it.
pub fn apply(
    state: &mut Dashboard,
    update: Update,
    controller: &Controller,
    tx: &mpsc::Sender<Update>,
) -> bool {
    match update {
        Update::Metrics(event) => {
            let refetch = matches!(event, crate::engine::MetricsEvent::ConfigChanged { .. });
            if refetch {
                refresh_config(controller, tx);
            }
            state.apply(event)
        }
        Update::Snapshot(snapshot) => {
            state.apply_snapshot(snapshot);
            true
        }
        Update::Config(config) => {
            state.set_config(config);
            true
        }
        Update::Log { severe, text } => {
            state.push_log(severe, text);
            true
        }
        Update::Done(Ok(message)) => {
            state.status = Some((message, false));
            true
        }
        Update::Done(Err(message)) => {
            state.status = Some((message, true));
            true
        }
        Update::Link(link) => {
            state.link = link;
            true
        }
    }
}

/// Fetches the configuration in the background into `tx`.
pub fn refresh_config(controller: &Controller, tx: &mpsc::Sender<Update>) {
    let (controller, tx) = (controller.clone(), tx.clone());
    actix_rt::spawn(async move {
        if let Ok(config) = controller.config().await {
            let _ = tx.send(Update::Config(config)).await;
        }
    });
}

/// Where commands go to be carried out. Changes are made one after another, in the order the
/// keys were pressed, by one task: a change made while another is under way waits its turn (a
/// daemon would otherwise get them in whatever order the requests arrive). Bursts, which wait
/// for their answers, go beside them.
#[derive(Clone)]
pub struct Calls {
    controller: Controller,
    tx: mpsc::Sender<Update>,
    changes: mpsc::UnboundedSender<(Call, Option<ConfigView>)>,
}

impl Calls {
    /// Starts the task making `controller`'s changes; results come back on `tx`. Call inside a
    /// running actix System.
    pub fn start(controller: Controller, tx: mpsc::Sender<Update>) -> Calls {
        let (changes, mut queue) = mpsc::unbounded_channel();
        let (worker, results) = (controller.clone(), tx.clone());
        actix_rt::spawn(async move {
            while let Some((call, before)) = queue.recv().await {
                make(&worker, &results, call, before).await;
            }
        });
        Calls { controller, tx, changes }
    }

    fn send(&self, call: Call, before: Option<ConfigView>) {
        if matches!(call, Call::Burst(_)) {
            let (controller, tx) = (self.controller.clone(), self.tx.clone());
            actix_rt::spawn(async move { make(&controller, &tx, call, before).await });
        } else if let Err(mpsc::error::SendError((call, before))) = self.changes.send((call, before)) {
            // The task is gone (it cannot panic, but be sure): make the change on its own.
            let (controller, tx) = (self.controller.clone(), self.tx.clone());
            actix_rt::spawn(async move { make(&controller, &tx, call, before).await });
        }
    }
}

/// Makes `call`; sends the configuration after it and the result to `tx`.
async fn make(controller: &Controller, tx: &mpsc::Sender<Update>, call: Call, before: Option<ConfigView>) {
    let update = match controller.run(call).await {
        Ok(done) => {
            if let Some(config) = done.config {
                let _ = tx.send(Update::Config(config)).await;
            }
            Update::Done(Ok(done.message))
        }
        Err(error) => {
            let config = controller.config().await.ok().or(before);
            if let Some(config) = config {
                let _ = tx.send(Update::Config(config)).await;
            }
            Update::Done(Err(error.to_string()))
        }
    };
    let _ = tx.send(update).await;
}

/// Starts `command` through `calls`; its result comes back on their channel. False for quit.
pub fn start(state: &mut Dashboard, command: Command, calls: &Calls) -> bool {
    let call = match command.resolve(state.config.as_ref()) {
        Ok(Some(call)) => call,
        Ok(None) => return false,
        Err(error) => {
            state.status = Some((error.to_string(), true));
            return true;
        }
    };
    // A new change replaces the last one's message.
    state.status = None;
    // Shown at once, so a second key press builds on the first; the reply sets the truth, and a
    // refusal puts back what the engine has (or, failing that, what was shown before).
    let before = state.config.clone();
    if let Some(config) = &mut state.config {
        call.apply_to(config);
    }
    calls.send(call, before);
    true
}

/// What the console loop works with: the terminal and its keys, the dashboard's state, where
/// commands go, and the updates coming in. One for the whole session: see [`drain`].
pub struct Screen<'a> {
    /// The terminal drawn on.
    pub terminal: &'a mut Terminal<CrosstermBackend<Stdout>>,
    /// Its keys.
    pub keys: EventStream,
    /// What is shown.
    pub state: Dashboard,
    /// Where commands go.
    pub controller: Controller,
    /// Where background results are sent (to `updates`).
    pub tx: mpsc::Sender<Update>,
    /// Metrics, logs and results coming in.
    pub updates: mpsc::Receiver<Update>,
}

/// Runs the dashboard on `screen` until `q`, Ctrl-C or `stop` completes.
pub async fn run(screen: &mut Screen<'_>, stop: impl Future<Output = ()>) -> Result<(), ConsoleError> {
    let Screen { terminal, keys, state, controller, tx, updates } = screen;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    refresh_config(controller, tx);
    let calls = Calls::start(controller.clone(), tx.clone());
    let mut dirty = true;
    let mut last_frame = Instant::now() - FRAME;
    tokio::pin!(stop);
    // A drill for the real-terminal test: the terminal must come back from a panic too.
    // (`actor` drills an engine actor's panic instead; see `run_local`.)
    // Only with the `fault-injection` feature (never in a release build).
    #[cfg(feature = "fault-injection")]
    let panic_drill = std::env::var_os("FERRY_CONSOLE_PANIC_DRILL").is_some_and(|drill| drill != "actor");
    loop {
        if dirty && last_frame.elapsed() >= FRAME {
            terminal.draw(|frame| draw(frame, state))?;
            last_frame = Instant::now();
            dirty = false;
            #[cfg(feature = "fault-injection")]
            if panic_drill && state.config.is_some() {
                panic!("FERRY_CONSOLE_PANIC_DRILL is set: panicking on purpose");
            }
        }
        let next_frame = tokio::time::Instant::from_std(last_frame + FRAME);
        tokio::select! {
            () = &mut stop => return Ok(()),
            key = keys.next() => match key {
                Some(Ok(Event::Key(key))) => {
                    if let Some(command) = handle_key(state, key)
                        && !start(state, command, &calls)
                    {
                        return Ok(());
                    }
                    dirty = true;
                }
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(ConsoleError::Terminal(error)),
                None => return Ok(()),
            },
            Some(update) = updates.recv() => {
                dirty |= apply(state, update, controller, tx);
            }
            _ = tick.tick() => dirty |= on_tick(state),
            () = tokio::time::sleep_until(next_frame), if dirty => {}
        }
    }
}

/// Quit keys this soon after the drain starts are the first `q` held down, not a second one
/// (a signal cuts off at once).
const REPEAT_GUARD: Duration = Duration::from_millis(500);

/// After a quit: keeps the dashboard live while `draining` (the engine's drain) runs — queues
/// empty, batches finish — and ends it at once on a second `q`, Ctrl-C or `signal` (a second
/// SIGTERM, say) by calling `cut_off`. Returns what `draining` returned. A terminal that fails
/// (closed, hung up) is left alone: the drain goes on without a picture.
///
/// The key stream is the one [`run`] read: crossterm reads the terminal on a thread of its own
/// under a process-wide lock, and on a hung-up terminal that thread never lets go of it, so a
/// second stream made here would wait for the lock for ever.
pub async fn drain<T>(
    screen: &mut Screen<'_>,
    draining: impl Future<Output = T>,
    signal: impl Future<Output = ()>,
    cut_off: impl Fn(),
) -> T {
    let Screen { terminal, keys, state, controller, tx, updates } = screen;
    state.drain = Some(Drain::Starting);
    state.mode = super::state::Mode::Normal;
    let settled = tokio::time::sleep(REPEAT_GUARD);
    let mut reading = true;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut drawing = true;
    let mut last_frame = Instant::now() - FRAME;
    tokio::pin!(draining, signal, settled);
    let mut signalled = false;
    loop {
        if drawing && dirty && last_frame.elapsed() >= FRAME {
            drawing = terminal.draw(|frame| draw(frame, state)).is_ok();
            last_frame = Instant::now();
            dirty = false;
        }
        let next_frame = tokio::time::Instant::from_std(last_frame + FRAME);
        let mut cut = false;
        tokio::select! {
            output = &mut draining => return output,
            () = &mut settled, if state.drain == Some(Drain::Starting) => {
                state.drain = Some(Drain::Waiting);
                dirty = true;
            }
            () = &mut signal, if !signalled => {
                signalled = true;
                cut = true;
            }
            key = keys.next(), if reading => match key {
                Some(Ok(Event::Key(key))) if is_quit(key) => cut = state.drain == Some(Drain::Waiting),
                Some(Ok(Event::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                // The terminal is gone: stop reading it.
                Some(Err(_)) | None => reading = false,
            },
            Some(update) = updates.recv() => {
                dirty |= apply(state, update, controller, tx);
            }
            _ = tick.tick() => dirty |= on_tick(state),
            () = tokio::time::sleep_until(next_frame), if dirty && drawing => {}
        }
        if cut && state.drain != Some(Drain::CuttingOff) {
            tracing::info!(
                event = "shutdown",
                phase = "cut_off",
                by = if signalled { "signal" } else { "console" }
            );
            cut_off();
            state.drain = Some(Drain::CuttingOff);
            dirty = true;
        }
    }
}

/// The quit keys (`q`, Ctrl-C) of the key table: they end a drain early.
fn is_quit(key: KeyEvent) -> bool {
    key.kind != KeyEventKind::Release && action_for(key) == Some(Action::Quit)
}

/// The one-second tick: clocks, samples; true when the screen should change.
fn on_tick(state: &mut Dashboard) -> bool {
    let moved = state.tick(Instant::now(), SystemTime::now());
    // Ages and countdowns move with the clock while anything waits.
    moved || state.lanes.values().any(|l| l.depth > 0) || state.upstreams.values().any(|u| u.until.is_some())
}
