//! The commands' answers on stdout: every line a command prints goes through here, so
//! there is one place that decides what a failed write means.
//!
//! A reader that stops reading (`wijkpoort audit … records | head -1`, `store backup |
//! head -0`) closes the pipe, and the next write fails with `BrokenPipe`. For a command
//! line tool that is the reader's choice, not a failure: the process ends at once with
//! exit 0 and no message, as `cat` or `grep` do. (They die of SIGPIPE; the Rust runtime
//! ignores that signal so that `println!` panics instead, and restoring it would take
//! `unsafe`, which this crate forbids.) Ending the process there loses nothing: a
//! command prints after its work is committed — the store's commit point is on disk
//! before anything says "accepted" — and a cut-off answer has no one left to read it.
//!
//! Any other failure to write (a full disk under `> file`) also ends the process, with
//! one line on stderr naming the problem and exit 74 (EX_IOERR), since the answer the
//! caller asked for was not delivered.

use std::io::{self, Write};

/// Exit status when stdout cannot be written for another reason than a closed reader.
pub const EXIT_IO_ERROR: i32 = 74;

/// Writes `text` to stdout as it is and flushes it.
pub fn write(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        failed(&e)
    }
}

/// Writes one line to stdout (what [`outln!`] calls).
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) {
        failed(&e)
    }
}

fn failed(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("wijkpoort: writing to stdout failed: {e}");
    std::process::exit(EXIT_IO_ERROR)
}

/// `println!` for the commands: one line on stdout through [`line`], so a closed pipe
/// ends the command cleanly instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;
