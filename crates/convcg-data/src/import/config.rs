//! The `[data]` section of a run config that suits an imported log, as commented TOML.

use std::fmt::Write as _;

use super::Source;
use crate::DatasetConfig;
use crate::hash::IdMap;
use crate::schema::{EngagementKind, EventLog};

const DAY_S: f64 = 86_400.0;

/// How eval queries are cut from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum EvalProtocol {
    /// The last `eval_window_days` of the log are the eval window.
    Time,
    /// Each converting user's last conversion is an eval query, with the user's earlier events
    /// as history.
    LastConversion,
}

impl EvalProtocol {
    fn as_str(self) -> &'static str {
        match self {
            EvalProtocol::Time => "time",
            EvalProtocol::LastConversion => "last_conversion",
        }
    }
}

/// The values of the section, each with the sentence that explains it for this log.
pub(super) struct DataSection {
    pub(super) source: Source,
    pub(super) eval_protocol: (EvalProtocol, String),
    pub(super) eval_window_s: (i64, String),
    pub(super) click_window_s: (i64, String),
    pub(super) view_window_s: (i64, String),
    pub(super) history_len: (usize, String),
    pub(super) id_code_dim: (usize, String),
}

impl DataSection {
    /// The TOML text: a `[data]` table with a comment above each key; the keys not chosen for
    /// the log keep [`DatasetConfig`]'s defaults and say so.
    pub(super) fn to_toml(&self) -> String {
        let defaults = DatasetConfig::default();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Dataset settings chosen by `convcg import {}` for this log; a run config may\n\
             # include this section as it is.\n\
             [data]",
            self.source
        );
        let mut key = |comment: &str, name: &str, value: String| {
            let _ = writeln!(out);
            for line in comment.lines() {
                let _ = writeln!(out, "# {line}");
            }
            let _ = writeln!(out, "{name} = {value}");
        };
        key(
            &self.eval_protocol.1,
            "eval_protocol",
            format!("\"{}\"", self.eval_protocol.0.as_str()),
        );
        key(
            &self.eval_window_s.1,
            "eval_window_days",
            days(self.eval_window_s.0),
        );
        key(
            &self.click_window_s.1,
            "click_window_days",
            days(self.click_window_s.0),
        );
        key(
            &self.view_window_s.1,
            "view_window_days",
            days(self.view_window_s.0),
        );
        key(
            &self.history_len.1,
            "history_len",
            self.history_len.0.to_string(),
        );
        key(
            &self.id_code_dim.1,
            "id_code_dim",
            self.id_code_dim.0.to_string(),
        );
        key(
            "Loss weight of an engagement example (the default: both tasks count alike).",
            "engagement_weight",
            float(f64::from(defaults.engagement_weight)),
        );
        key(
            "Loss weight of a conversion example (the default).",
            "conversion_weight",
            float(f64::from(defaults.conversion_weight)),
        );
        key(
            "Eval queries kept per task before a seeded subsample (the default; more than this\nlog yields).",
            "max_eval_queries",
            defaults.max_eval_queries.to_string(),
        );
        key(
            "Seed of that subsample (the default).",
            "eval_seed",
            defaults.eval_seed.to_string(),
        );
        out
    }
}

/// Seconds as a TOML float of days, to the second's precision (6 decimals would lose it).
fn days(seconds: i64) -> String {
    float(seconds as f64 / DAY_S)
}

/// A float that TOML reads back as a float (always with a decimal point), without noise digits.
fn float(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_owned()
    }
}

/// A duration in words: `1 h 55 min`, `29 min`, `2 days 3 h`.
pub(super) fn words(seconds: i64) -> String {
    let minutes = (seconds + 30) / 60;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (d, h, m) {
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} day{} {h} h", if d == 1 { "" } else { "s" }),
    }
}

/// The share of impressions, by time, that the eval window of a time split holds.
pub(super) const EVAL_SHARE: f64 = 0.2;

/// The shortest window, rounded up to whole minutes (at least one), that holds the last
/// `share` of `ts` (the times of a log's impressions, any order).
pub(super) fn window_for_last(ts: &[i64], share: f64) -> i64 {
    let mut sorted = ts.to_vec();
    sorted.sort_unstable();
    let Some(&last) = sorted.last() else {
        return 60;
    };
    let kept = ((sorted.len() as f64 * share).ceil() as usize).clamp(1, sorted.len());
    let start = sorted[sorted.len() - kept];
    let seconds = last - start;
    (seconds.div_euclid(60) + i64::from(seconds % 60 != 0)).max(1) * 60
}

/// `id_code_dim` of an imported log with short bags. A member of a bag of `n` distinct pins has
/// a code cosine of `1/sqrt(n)` with the bag's mean code, and any other pin one of spread
/// `1/sqrt(width)`: at 512 columns and `n <= 8` a member stands eight spreads clear, and the
/// other pins' spread, which the model's code weight multiplies, stays small beside the heads'
/// cosines.
pub(super) const ID_CODE_DIM: usize = 512;

/// The longest `history_len` that gets identity codes: past it a bag's mean code is too close to
/// every pin's to single out its members, and codes lower buy recall (tmall's bags of 50 and
/// trivago's of 27; docs/results.md, Real slices).
pub(super) const MAX_CODED_HISTORY: usize = 8;

/// Facts about a log that the config's comments quote.
pub(super) struct Measured {
    /// Largest minus smallest impression ts.
    pub(super) span_s: i64,
    /// [`window_for_last`] of the impressions, [`EVAL_SHARE`].
    pub(super) eval_window_s: i64,
    /// The 90th percentile of engagements per user (users with none count as 0).
    pub(super) engagements_per_user_p90: usize,
    /// Conversions in the log.
    pub(super) conversions: usize,
    /// Conversions with a click on the same user and pin at or before their ts.
    pub(super) conversions_after_click: usize,
    /// Of those, the ones whose last such click is at most [`Measured::window_s`] before.
    pub(super) within_window: usize,
    /// The click window measured against.
    pub(super) window_s: i64,
}

impl Measured {
    /// Measures `log`, whose impression ids must increase (the importers number them so).
    pub(super) fn of(log: &EventLog, window_s: i64) -> Measured {
        let imps = &log.impressions;
        let span_s = match (imps.ts.iter().min(), imps.ts.iter().max()) {
            (Some(lo), Some(hi)) => hi - lo,
            _ => 0,
        };
        let mut per_user: IdMap<i64, usize> = log.users.iter().map(|u| (u.user_id, 0)).collect();
        // Click times only of the (user, pin) pairs that convert: few, next to all clicks.
        let mut clicks: IdMap<(i64, i64), Vec<i64>> = log
            .conversions
            .iter()
            .map(|c| ((c.user_id, c.pin_id), Vec::new()))
            .collect();
        for e in &log.engagements {
            let Ok(i) = imps.impression_id.binary_search(&e.impression_id) else {
                continue;
            };
            let user = imps.user_id[i];
            *per_user.entry(user).or_default() += 1;
            if e.kind == EngagementKind::Click
                && let Some(times) = clicks.get_mut(&(user, imps.pin_id[i]))
            {
                times.push(e.ts);
            }
        }
        let (mut conversions_after_click, mut within_window) = (0, 0);
        for c in &log.conversions {
            let last = clicks
                .get(&(c.user_id, c.pin_id))
                .and_then(|t| t.iter().filter(|&&t| t <= c.ts).max());
            if let Some(&t) = last {
                conversions_after_click += 1;
                within_window += usize::from(c.ts - t <= window_s);
            }
        }
        let mut counts: Vec<usize> = per_user.into_values().collect();
        counts.sort_unstable();
        let engagements_per_user_p90 = counts
            .get((counts.len() * 9 / 10).min(counts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0);
        Measured {
            span_s,
            eval_window_s: window_for_last(&imps.ts, EVAL_SHARE),
            engagements_per_user_p90,
            conversions: log.conversions.len(),
            conversions_after_click,
            within_window,
            window_s,
        }
    }

    /// `history_len`: bags as long as 90% of users' engagement counts, within 5..=50.
    pub(super) fn history_len(&self) -> (usize, String) {
        let len = self.engagements_per_user_p90.clamp(5, 50);
        (
            len,
            format!(
                "Length of the recent-engagement bags. 90% of this log's users have at most {}\n\
                 engagements, so bags of {len} hold their whole history (kept within 5..50).",
                self.engagements_per_user_p90
            ),
        )
    }

    /// `id_code_dim`: identity codes of [`ID_CODE_DIM`] columns where the recent-pins bags are
    /// short enough for a bag's mean code to single out its members (`history_len` up to
    /// [`MAX_CODED_HISTORY`]), none where they are longer; the comment gives the share of
    /// conversions that follow a click by the same user on the same pin.
    pub(super) fn id_code_dim(&self, history_len: usize) -> (usize, String) {
        let share = 100.0 * self.conversions_after_click as f64 / self.conversions.max(1) as f64;
        let (after, all) = (self.conversions_after_click, self.conversions);
        if history_len <= MAX_CODED_HISTORY {
            (
                ID_CODE_DIM,
                format!(
                    "Width of the pins' identity codes. {after} of this log's {all} conversions ({share:.1}%)\n\
                     follow a click by the same user on the same pin; the codes let the model\n\
                     retrieve the pins of the user's recent-pins bag, pins no training row holds\n\
                     included."
                ),
            )
        } else {
            (
                0,
                format!(
                    "No identity codes. {after} of this log's {all} conversions ({share:.1}%) follow a\n\
                     click by the same user on the same pin, but bags of {history_len} pins are too long\n\
                     for a bag's mean code to single out its members (codes are used up to\n\
                     {MAX_CODED_HISTORY}); the id tables carry repeat intent here."
                ),
            )
        }
    }

    /// The sentence on how many conversions follow a click within the window.
    pub(super) fn click_share(&self) -> String {
        let share = if self.conversions_after_click == 0 {
            0.0
        } else {
            100.0 * self.within_window as f64 / self.conversions_after_click as f64
        };
        format!(
            "Of the {} conversions that follow a click on the same pin here, {} ({share:.0}%)\n\
             follow it within {}.",
            self.conversions_after_click,
            self.within_window,
            words(self.window_s)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_keep_a_point_and_drop_noise() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(0.0), "0.0");
        assert_eq!(days(3600), "0.041666667");
        assert_eq!(days(86_400), "1.0");
        let back: f64 = days(1740).parse().unwrap();
        assert_eq!((back * DAY_S).round() as i64, 1740);
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(words(6909), "1 h 55 min");
        assert_eq!(words(1740), "29 min");
        assert_eq!(words(3600), "1 h");
        assert_eq!(words(172_800 + 3 * 3600), "2 days 3 h");
        assert_eq!(words(86_400), "1 day 0 h");
    }

    #[test]
    fn eval_window_holds_the_last_share_in_whole_minutes() {
        // Ten impressions a minute apart: the last 20% are the last two, 60 s apart.
        let ts: Vec<i64> = (0..10).rev().map(|i| 1_000 + 60 * i).collect();
        assert_eq!(window_for_last(&ts, 0.2), 60);
        assert_eq!(window_for_last(&ts, 0.3), 120);
        // A partial minute rounds up; one timestamp or none gives the one-minute floor.
        assert_eq!(window_for_last(&[0, 61], 0.5), 60);
        assert_eq!(window_for_last(&[0, 61], 1.0), 120);
        assert_eq!(window_for_last(&[5, 5, 5], 0.2), 60);
        assert_eq!(window_for_last(&[], 0.2), 60);
        // Skewed times: the window follows the impressions, not the span.
        let mut skewed = vec![0; 90];
        skewed.extend((0..10).map(|i| 100_000 + i));
        assert_eq!(window_for_last(&skewed, 0.1), 60);
        assert_eq!(window_for_last(&skewed, 0.11), 100_020);
    }
}
