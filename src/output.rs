//! The commands' standard output. A reader that stops early (`daeda services
//! --json | head -c 10`) closes the pipe: the rest of the output is dropped
//! and the command goes on to its own exit code (0 when its work succeeded),
//! as ripgrep does, instead of std's `outln!` panic ("failed printing to
//! stdout: Broken pipe", exit 101). Rust ignores SIGPIPE, and restoring the
//! default (death by signal, 141 in a shell) needs `unsafe`, which this crate
//! forbids; a reader that wanted everything sees its own failure anyway.
//! Any other write error (a full disk, `/dev/full`) is kept for [`finish`],
//! and `main` reports it and exits 1.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Set once a write failed: nothing more is written.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// The first write error that is not a closed pipe.
static FAILURE: Mutex<Option<std::io::Error>> = Mutex::new(None);

/// Writes to stdout unless an earlier write failed; used by `out!` and `outln!`.
pub fn write(args: std::fmt::Arguments<'_>) {
    if CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        failed(e);
    }
}

fn failed(e: std::io::Error) {
    CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != ErrorKind::BrokenPipe {
        FAILURE.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
    }
}

/// Flushes what is buffered; the first write error other than a closed pipe, if any.
pub fn finish() -> Option<std::io::Error> {
    if !CLOSED.load(Ordering::Relaxed) {
        if let Err(e) = std::io::stdout().lock().flush() {
            failed(e);
        }
    }
    FAILURE.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// `print!` to stdout through [`write`]: a closed pipe ends the output quietly.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write(format_args!($($arg)*)) };
}

/// `outln!` to stdout through [`write`]: a closed pipe ends the output quietly.
macro_rules! outln {
    () => { $crate::output::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write(format_args!("{}\n", format_args!($($arg)*))) };
}
