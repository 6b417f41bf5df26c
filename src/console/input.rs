//! Keys become actions, actions change the dashboard's interaction state or ask for a
//! [`Command`]. Nothing here talks to the engine: the loop runs the command.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::command::{Command, Step};
use super::keys::{Action, action_for};
use super::state::{Dashboard, Field, Focus, Mode};

/// Lines a page scroll moves.
const PAGE: usize = 5;
/// Longest number the prompt takes.
const MAX_DIGITS: usize = 9;

/// Handles one key; returns the command it asks for, if any.
pub fn handle_key(state: &mut Dashboard, key: KeyEvent) -> Option<Command> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    match state.mode.clone() {
        Mode::Help => {
            state.mode = Mode::Normal;
            None
        }
        Mode::Input { field, buffer } => typing(state, field, buffer, key),
        Mode::Normal => action_for(key).and_then(|action| act(state, action)),
    }
}

fn typing(state: &mut Dashboard, field: Field, mut buffer: String, key: KeyEvent) -> Option<Command> {
    if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
        state.mode = Mode::Normal;
        return Some(Command::Quit);
    }
    match key.code {
        KeyCode::Char(c) if c.is_ascii_digit() && buffer.len() < MAX_DIGITS => buffer.push(c),
        KeyCode::Backspace => {
            buffer.pop();
        }
        KeyCode::Esc => {
            state.mode = Mode::Normal;
            return None;
        }
        KeyCode::Enter => {
            state.mode = Mode::Normal;
            let Ok(value) = buffer.parse::<u64>() else {
                state.status = Some((format!("{}: type a number", field.label()), true));
                return None;
            };
            return Some(set(field, value));
        }
        _ => {}
    }
    state.mode = Mode::Input { field, buffer };
    None
}

fn set(field: Field, value: u64) -> Command {
    match field {
        Field::BatchSize => Command::BatchSize(Step::To(value)),
        Field::BatchDelay => Command::BatchDelay(Step::To(value)),
        Field::LaneWindow(lane) => Command::LaneWindow(lane, Step::To(value)),
        Field::LaneMaxBatch(lane) => Command::LaneMaxBatch(lane, Step::To(value)),
    }
}

fn act(state: &mut Dashboard, action: Action) -> Option<Command> {
    let lane = state.selected_lane();
    let lane_step = |step: Step, make: fn(String, Step) -> Command| lane.clone().map(|l| make(l, step));
    match action {
        Action::Quit => Some(Command::Quit),
        Action::Help => {
            state.mode = Mode::Help;
            None
        }
        Action::BatchSizeUp => Some(Command::BatchSize(Step::By(1))),
        Action::BatchSizeDown => Some(Command::BatchSize(Step::By(-1))),
        Action::DelayUp => Some(Command::BatchDelay(Step::By(10))),
        Action::DelayDown => Some(Command::BatchDelay(Step::By(-10))),
        Action::LaneMaxUp => lane_step(Step::By(1), Command::LaneMaxBatch),
        Action::LaneMaxDown => lane_step(Step::By(-1), Command::LaneMaxBatch),
        Action::WindowUp => lane_step(Step::By(100), Command::LaneWindow),
        Action::WindowDown => lane_step(Step::By(-100), Command::LaneWindow),
        Action::TypeBatchSize => prompt(state, Some(Field::BatchSize)),
        Action::TypeDelay => prompt(state, Some(Field::BatchDelay)),
        Action::TypeLaneMax => prompt(state, lane.map(Field::LaneMaxBatch)),
        Action::TypeWindow => prompt(state, lane.map(Field::LaneWindow)),
        Action::LaneUp => {
            state.selected = state.selected.saturating_sub(1);
            None
        }
        Action::LaneDown => {
            let last = state.lane_order().len().saturating_sub(1);
            state.selected = (state.selected + 1).min(last);
            None
        }
        Action::TogglePause => Some(if state.paused() { Command::Resume } else { Command::Pause }),
        Action::Burst => Some(Command::Burst),
        Action::SwitchFocus => {
            state.focus = match state.focus {
                Focus::Failures => Focus::Log,
                Focus::Log => Focus::Failures,
            };
            None
        }
        Action::ScrollUp => {
            let (scroll, len) = scrolled(state);
            *scroll = (*scroll + PAGE).min(len.saturating_sub(1));
            None
        }
        Action::ScrollDown => {
            let (scroll, _) = scrolled(state);
            *scroll = scroll.saturating_sub(PAGE);
            None
        }
        Action::ScrollEnd => {
            *scrolled(state).0 = 0;
            None
        }
    }
}

fn prompt(state: &mut Dashboard, field: Option<Field>) -> Option<Command> {
    if let Some(field) = field {
        state.mode = Mode::Input { field, buffer: String::new() };
    }
    None
}

fn scrolled(state: &mut Dashboard) -> (&mut usize, usize) {
    match state.focus {
        Focus::Failures => (&mut state.failures_scroll, state.failures.len()),
        Focus::Log => (&mut state.log_scroll, state.log.len()),
    }
}
