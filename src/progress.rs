//! What the commands show while they work: spinners and progress bars on stderr, hidden when a
//! run is quiet. One place, so that every command draws them alike.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A ticking spinner for work of unknown length, hidden when quiet; `msg` may be empty when the
/// work sets its own messages.
pub(crate) fn spinner(loud: bool, msg: &'static str) -> ProgressBar {
    if !loud {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(Duration::from_millis(200));
    s
}

/// A progress bar of `len` steps (the work may reset the length), hidden when quiet.
pub(crate) fn progress(loud: bool, len: u64, msg: &'static str) -> ProgressBar {
    if !loud {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}
