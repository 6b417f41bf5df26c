//! The terminal the console draws on: raw mode and the alternate screen while it runs, restored
//! on every way out — normal return, error and panic (the guard's `Drop`, also run while a panic
//! unwinds). While the dashboard is up the panic hook only logs and keeps the message: a panic
//! the engine catches (an actor restarted) must not tear the terminal down under a running
//! console.

use std::io::{self, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};

use crossterm::cursor::Show;
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;

/// The terminal in console mode; dropping it restores the terminal.
pub struct TerminalGuard {
    /// The ratatui terminal.
    pub terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    /// Enters raw mode and the alternate screen, and installs the panic hook.
    pub fn enter() -> io::Result<Self> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::Release);
        let mut stdout = io::stdout();
        if let Err(error) = execute!(stdout, EnterAlternateScreen) {
            restore();
            return Err(error);
        }
        match Terminal::new(CrosstermBackend::new(stdout)) {
            Ok(mut terminal) => {
                if let Err(error) = terminal.hide_cursor().and_then(|()| terminal.clear()) {
                    restore();
                    return Err(error);
                }
                Ok(TerminalGuard { terminal })
            }
            Err(error) => {
                restore();
                Err(error)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
        // Unwinding from a panic on this thread: its message was kept, not printed over the
        // dashboard; print it now, on the restored terminal.
        if std::thread::panicking()
            && let Some(message) = LAST_PANIC.lock().ok().and_then(|mut last| last.take())
        {
            eprintln!("{message}");
        }
    }
}

/// The last panic seen while the console was drawing.
static LAST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Whether the terminal is in console mode now.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Leaves the alternate screen and raw mode and shows the cursor, once: a second call (the
/// guard's drop after the panic hook) does nothing, since leaving the alternate screen again
/// would move the cursor back over the panic message.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::AcqRel) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

fn install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // While the dashboard is up a panic is logged and kept, not printed: most are
            // caught (an engine actor restarted, an HTTP worker replaced) and the console goes
            // on; one that ends the console unwinds through the guard, which restores the
            // terminal and prints it.
            if ACTIVE.load(Ordering::Acquire) {
                tracing::error!(event = "panic", message = %info);
                if let Ok(mut last) = LAST_PANIC.lock() {
                    *last = Some(info.to_string());
                }
                return;
            }
            previous(info);
        }));
    });
}
