//! The progress bar `tote pack` draws while it compresses a large bundle or image layer. It is
//! drawn only when stderr is a terminal and no `-v` logging would interleave with it;
//! otherwise nothing is shown.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

/// Below this many bytes compression is quick enough to need no bar.
const LARGE: u64 = 16 << 20;

static ALLOWED: AtomicBool = AtomicBool::new(true);

/// Called once at start-up: bars are allowed only when nothing else is logged below warnings.
pub fn allow(allowed: bool) {
    ALLOWED.store(allowed, Ordering::Relaxed);
}

/// A bar counting input bytes, or nothing.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar for `total` input bytes, labelled `what`, when the work is large and stderr a
    /// terminal.
    pub fn new(total: u64, what: &str) -> Progress {
        let wanted =
            total >= LARGE && ALLOWED.load(Ordering::Relaxed) && std::io::stderr().is_terminal();
        if !wanted {
            return Progress::hidden();
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "tote: {msg} {wide_bar} {binary_bytes}/{binary_total_bytes} {eta}",
        )
        .expect("a valid template");
        bar.set_style(style);
        bar.set_message(what.to_string());
        Progress(Some(bar))
    }

    /// No bar.
    pub fn hidden() -> Progress {
        Progress(None)
    }

    /// Counts `bytes` more done; callable from several threads.
    pub fn add(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc(bytes);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
