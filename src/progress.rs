//! What the commands show while they work: spinners and progress bars on stderr, hidden when a
//! run is quiet. One place, so that every command draws them alike.
//!
//! Outside a terminal (a batch job, `docker logs`, a pipe) indicatif draws nothing, so a long
//! job would print nothing until it ends: there, each bar or spinner prints one plain line of
//! its state every [`plain_interval`] instead, until it finishes.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// The environment variable that sets the seconds between plain progress lines.
pub const PROGRESS_EVERY_ENV: &str = "CONVCG_PROGRESS_EVERY_S";

/// Seconds between plain progress lines when [`PROGRESS_EVERY_ENV`] is unset.
const DEFAULT_PLAIN_EVERY_S: f64 = 10.0;

/// A ticking spinner for work of unknown length, hidden when quiet; `msg` may be empty when the
/// work sets its own messages.
pub(crate) fn spinner(loud: bool, msg: &'static str) -> ProgressBar {
    if !loud {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(Duration::from_millis(200));
    report_plainly(&s);
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
    report_plainly(&bar);
    bar
}

/// The time between plain progress lines: [`PROGRESS_EVERY_ENV`] seconds, else 10 s.
fn plain_interval() -> Duration {
    std::env::var(PROGRESS_EVERY_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::from_secs_f64(DEFAULT_PLAIN_EVERY_S), |s| {
            Duration::from_secs_f64(s.min(86_400.0))
        })
}

/// Where stderr is not a terminal, a thread that prints `bar`'s state as one line every
/// [`plain_interval`] (the first after one interval, so quick work prints none) until it
/// finishes or is dropped.
fn report_plainly(bar: &ProgressBar) {
    if std::io::stderr().is_terminal() {
        return;
    }
    let every = plain_interval();
    let weak = bar.downgrade();
    let spawned = std::thread::Builder::new()
        .name("progress".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(bar) = weak.upgrade() else { return };
                if bar.is_finished() {
                    return;
                }
                eprintln!("{}", plain_line(&bar));
            }
        });
    // Without the thread the work goes on, only unreported.
    drop(spawned);
}

/// `progress: 120/185 loss 3.210 (12s elapsed, about 6s left)`, or for a spinner
/// `progress: reading the event log (12s elapsed)`.
fn plain_line(bar: &ProgressBar) -> String {
    let elapsed = bar.elapsed().as_secs();
    match bar.length() {
        Some(len) => format!(
            "progress: {}/{len} {} ({elapsed}s elapsed, about {}s left)",
            bar.position(),
            bar.message(),
            bar.eta().as_secs()
        ),
        None => format!("progress: {} ({elapsed}s elapsed)", bar.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_position_length_and_message() {
        let bar = ProgressBar::hidden();
        bar.set_length(185);
        bar.set_position(120);
        bar.set_message("loss 3.210");
        let line = plain_line(&bar);
        assert!(line.starts_with("progress: 120/185 loss 3.210 ("), "{line}");
        let spin = ProgressBar::new_spinner();
        spin.set_message("reading the event log");
        let line = plain_line(&spin);
        assert!(
            line.starts_with("progress: reading the event log ("),
            "{line}"
        );
    }
}
