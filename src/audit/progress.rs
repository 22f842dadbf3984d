//! Progress of the auditor's long commands (`verify`, `export`) over a large store: a
//! bar on stderr when stderr is a terminal, nothing at all otherwise — so a piped or
//! redirected run writes exactly its answer and a log file holds no control characters.
//!
//! The bar counts audit records; it is drawn by `indicatif` at most a few times a
//! second and cleared when the command is done, so the answer on stdout stands alone.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where a long command reports how far it is. [`Progress::hidden`] reports nowhere.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Reports nothing (a piped run, the online server side, the tests).
    pub fn hidden() -> Progress {
        Progress { bar: None }
    }

    /// A bar on stderr if stderr is a terminal, else [`Progress::hidden`].
    pub fn on_terminal() -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} audit records ({eta} left)")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        Progress { bar: Some(bar) }
    }

    /// Starts a stage of `total` records named `what` ("verifying", "exporting").
    pub fn start(&self, what: &'static str, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_message(what);
            bar.set_length(total);
            bar.set_position(0);
        }
    }

    /// `n` more records done.
    pub fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }

    /// Clears the bar: the answer follows on stdout.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
