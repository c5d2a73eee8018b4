//! The training-data rules: attribution, label maturity, dual labels and weights, hard
//! negatives and sampling log-probabilities, as one function over an event log's columns.
//!
//! [`label`] runs the rules on any [`EventLog`] with a cutoff and an optional scope of
//! impressions; [`Dataset::build`](crate::Dataset::build) calls it on the training part with the
//! eval window's start as the cutoff, the W3 pipeline on a whole log with the largest impression
//! time. [`batches`] shuffles the result into columnar batches.

mod attribution;
mod batches;
mod config;
mod log_q;
mod negatives;
mod prefilter;

use std::fmt;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::schema::{EngagementKind, EventLog, Surface};
use crate::stats_table::{attributed_row, hard_negative_rows, write_rows};

pub use attribution::{Attribution, Touch};
pub use batches::{HardNegativeSlots, LabelledBatch, batches};
pub use config::{
    ClickWeight, ConversionKindWeights, LabelConfig, MAX_HARD_NEGATIVES, ValueWeighting,
};
pub use log_q::{LogQMode, StreamingCell, StreamingConfig, StreamingFrequency, StreamingState};
pub use negatives::{uniform_log_q, uniform_negatives};

/// The "no index" sentinel of index columns (an orphan engagement, an unattributed conversion,
/// a missing hard negative); public documentation spells it `u32::MAX`.
pub const NONE: u32 = u32::MAX;

const CLICKED: u8 = 1;
const SAVED: u8 = 2;
const CONVERTED: u8 = 4;

/// Conversion label of a positive: the impression is mature and got an attributed conversion.
pub const CONVERTED_LABEL: i8 = 1;
/// Conversion label of a positive: the impression is mature and got no attributed conversion.
pub const NOT_CONVERTED_LABEL: i8 = 0;
/// Conversion label of a positive: the impression is too recent to know (masked in the loss).
pub const MASKED_LABEL: i8 = -1;

/// The impression index of each engagement (in `log.engagements` order), [`u32::MAX`] for an
/// engagement whose impression id is not in the log.
///
/// # Errors
/// If two impressions share an id, or the log has 2^32 - 1 impressions or more.
pub fn engagement_impressions(log: &EventLog) -> Result<Vec<u32>> {
    let ids = &log.impressions.impression_id;
    check_rows(ids.len())?;
    let first = ids.first().copied().unwrap_or(0);
    // Ids 1..=n in row order (what the synthetic marketplace and most exports write) index
    // directly; otherwise a sorted (id, row) table, or the rows themselves when sorted.
    let contiguous = ids
        .par_iter()
        .enumerate()
        .all(|(i, &id)| id.wrapping_sub(first) == i as i64);
    let find: Box<dyn Fn(i64) -> u32 + Sync> = if contiguous {
        let n = ids.len() as i64;
        Box::new(move |id| {
            let k = id.wrapping_sub(first);
            if (0..n).contains(&k) { k as u32 } else { NONE }
        })
    } else if ids.par_windows(2).all(|w| w[0] < w[1]) {
        Box::new(|id| ids.binary_search(&id).map_or(NONE, |i| i as u32))
    } else {
        let mut sorted: Vec<(i64, u32)> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i as u32))
            .collect();
        sorted.par_sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidLog {
                table: "impressions",
                row: w[0].1.max(w[1].1) as usize,
                column: "impression_id",
                message: format!("duplicate impression_id {}", w[1].0),
            });
        }
        Box::new(move |id| {
            sorted
                .binary_search_by_key(&id, |x| x.0)
                .map_or(NONE, |k| sorted[k].1)
        })
    };
    Ok(log
        .engagements
        .par_iter()
        .with_min_len(1 << 12)
        .map(|e| find(e.impression_id))
        .collect())
}

fn check_rows(n: usize) -> Result<()> {
    if n >= NONE as usize {
        return Err(Error::InvalidLog {
            table: "impressions",
            row: n - 1,
            column: "impression_id",
            message: format!("{n} rows; at most {} are supported", NONE - 1),
        });
    }
    Ok(())
}

/// Counts of what [`label`] found and made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelStats {
    /// Impressions in the log.
    pub impressions: usize,
    /// Impressions in scope (those positives and hard negatives come from).
    pub in_scope_impressions: usize,
    /// Engagements whose impression is not in the log (ignored).
    pub orphan_engagements: usize,
    /// Positives: in-scope impressions clicked, saved, or with conversion label 1.
    pub positives: usize,
    /// Positives with engagement label 1.
    pub engagement_positives: usize,
    /// Positives with conversion label 1.
    pub conversion_positives: usize,
    /// Positives whose conversion label is masked (immature impressions).
    pub masked_conversion_labels: usize,
    /// Conversions in the log.
    pub conversions: usize,
    /// Conversions credited to a click.
    pub attributed_click_through: usize,
    /// Conversions credited to an impression without a qualifying click.
    pub attributed_view_through: usize,
    /// Conversions credited to nothing (dropped).
    pub unattributed: usize,
    /// Attributed conversions whose in-scope impression is immature: they count as attributed
    /// (and keep the impression from being a hard negative) but make no positive.
    pub attributed_to_immature: usize,
    /// Hard negatives drawn from the positive's own request.
    pub hard_negatives_from_request: usize,
    /// Hard negatives drawn from the same user's impressions of the same UTC day.
    pub hard_negatives_from_same_day: usize,
    /// Positives that drew no hard negative (while hard negatives were asked for).
    pub positives_without_hard_negative: usize,
}

impl LabelStats {
    /// Attributed conversions, both ways.
    pub fn attributed(&self) -> usize {
        self.attributed_click_through + self.attributed_view_through
    }

    /// Hard negatives drawn, both ways.
    pub fn hard_negatives(&self) -> usize {
        self.hard_negatives_from_request + self.hard_negatives_from_same_day
    }
}

impl fmt::Display for LabelStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = vec![
            (
                "impressions (in scope)",
                format!("{} ({})", self.impressions, self.in_scope_impressions),
            ),
            (
                "positives: engagement / conversion / masked",
                format!(
                    "{}: {} / {} / {}",
                    self.positives,
                    self.engagement_positives,
                    self.conversion_positives,
                    self.masked_conversion_labels
                ),
            ),
            ("conversions", self.conversions.to_string()),
            attributed_row(self.attributed_click_through, self.attributed_view_through),
            (
                "unattributed / to immature impressions",
                format!("{} / {}", self.unattributed, self.attributed_to_immature),
            ),
        ];
        rows.extend(hard_negative_rows(
            self.hard_negatives_from_request,
            self.hard_negatives_from_same_day,
            self.positives_without_hard_negative,
        ));
        write_rows(f, &rows)
    }
}

/// Labelled positives, column by column, in impression-row order, with their hard negatives.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Labelled {
    /// The cutoff the labels were made with.
    pub cutoff: i64,
    /// Row in `log.impressions` of each positive (increasing).
    pub impression: Vec<u32>,
    /// The positive's user id (as in the log).
    pub user_id: Vec<i64>,
    /// The positive's pin id (as in the log).
    pub pin_id: Vec<i64>,
    /// The positive's surface.
    pub surface: Vec<Surface>,
    /// 1 if the impression was clicked or saved, else 0.
    pub label_engagement: Vec<u8>,
    /// [`CONVERTED_LABEL`], [`NOT_CONVERTED_LABEL`] or [`MASKED_LABEL`].
    pub label_conversion: Vec<i8>,
    /// `max(click weight, save weight if saved)`, 0 for a conversion-only positive.
    pub weight_engagement: Vec<f32>,
    /// Where the conversion label is 1, the largest kind weight x value factor of the
    /// impression's attributed conversions; else 0.
    pub weight_conversion: Vec<f32>,
    /// ln of the positive's pin's share of all positives.
    pub log_q: Vec<f32>,
    /// Hard negatives asked per positive (`H`).
    pub hard_negatives_per_positive: usize,
    /// `H` impression rows per positive (row-major), [`u32::MAX`] past the ones drawn.
    pub hard_negative: Vec<u32>,
    /// `H` per positive: the hard negative's pin id; past the ones drawn, the positive's own pin
    /// id, as in the slots of a batch ([`HardNegativeSlots`]).
    pub hard_negative_pin_id: Vec<i64>,
    /// `H` per positive: ln of the hard negative's pin's share of all drawn hard negatives,
    /// 0 where there is none.
    pub hard_negative_log_q: Vec<f32>,
    /// Every conversion's credited impression (over the whole log, in scope or not).
    pub attribution: Attribution,
    /// Counts.
    pub stats: LabelStats,
}

impl Labelled {
    /// Positives.
    pub fn len(&self) -> usize {
        self.impression.len()
    }

    /// Whether there are no positives.
    pub fn is_empty(&self) -> bool {
        self.impression.is_empty()
    }

    /// The hard-negative impression rows of positive `k` that were drawn (at most `H`).
    ///
    /// # Panics
    /// If `k >= self.len()`.
    #[track_caller]
    pub fn hard_negatives(&self, k: usize) -> &[u32] {
        let h = self.hard_negatives_per_positive;
        let row = &self.hard_negative[k * h..(k + 1) * h];
        &row[..row.partition_point(|&i| i != NONE)]
    }
}

/// Per-impression signals: flags dense over the log's rows, weights sparse (only clicked or
/// converted rows have one, and a dense float per row would cost more in page faults than the
/// rest of the pass).
struct Signals {
    /// [`CLICKED`] | [`SAVED`] | [`CONVERTED`] per row.
    flags: Vec<u8>,
    /// (row, largest click weight), sorted by row.
    click_weight: Vec<(u32, f32)>,
    /// (row, largest conversion weight of its attributed conversions), sorted by row.
    conversion_weight: Vec<(u32, f32)>,
}

/// Per row, the largest of its weights: `(row, weight)` pairs sorted by row, one per row.
fn max_per_row(mut weights: Vec<(u32, f32)>) -> Vec<(u32, f32)> {
    weights.par_sort_unstable_by_key(|w| w.0);
    let mut out: Vec<(u32, f32)> = Vec::with_capacity(weights.len());
    for (i, w) in weights {
        match out.last_mut() {
            Some(last) if last.0 == i => last.1 = last.1.max(w),
            _ => out.push((i, w)),
        }
    }
    out
}

/// The weight of row `i` in a [`max_per_row`] list (0 if absent).
fn weight_of(weights: &[(u32, f32)], i: u32) -> f32 {
    weights
        .binary_search_by_key(&i, |w| w.0)
        .map_or(0.0, |k| weights[k].1)
}

fn signals(
    log: &EventLog,
    eng_impression: &[u32],
    attribution: &Attribution,
    cfg: &LabelConfig,
) -> (Signals, usize) {
    let mut flags = vec![0u8; log.impressions.len()];
    let mut clicks = Vec::new();
    let mut orphans = 0;
    for (e, &i) in log.engagements.iter().zip(eng_impression) {
        if i == NONE {
            orphans += 1;
            continue;
        }
        match e.kind {
            EngagementKind::Click => {
                flags[i as usize] |= CLICKED;
                clicks.push((i, cfg.click_weight.weight(e.duration_s)));
            }
            EngagementKind::Save => flags[i as usize] |= SAVED,
        }
    }
    let mut conversions = Vec::new();
    for (c, &i) in log.conversions.iter().zip(&attribution.impression) {
        if i != NONE {
            flags[i as usize] |= CONVERTED;
            conversions.push((i, cfg.conversion_weight(c.kind, c.value)));
        }
    }
    let s = Signals {
        flags,
        click_weight: max_per_row(clicks),
        conversion_weight: max_per_row(conversions),
    };
    (s, orphans)
}

/// Runs the training-data rules on `log`.
///
/// * **Attribution** (over every impression, in scope or not): a conversion goes to the same
///   user's last click on its pin with `click.ts <= conv.ts <= click.ts + click_window`, else
///   to the last impression of that user and pin with `imp.ts <= conv.ts <= imp.ts +
///   view_window`, else to nothing. Ties on time go to the larger impression id; a click after
///   the conversion does not count, so such a conversion falls to view-through. Conversions are
///   not filtered by the cutoff.
/// * **Maturity**: an impression's conversion label is known only if `imp.ts + click_window <=
///   cutoff`; otherwise it is [`MASKED_LABEL`].
/// * **Positives**: in-scope impressions that were clicked or saved, or that are mature with an
///   attributed conversion. Engagement weight = `max(click weight, save_weight if saved)`, the
///   click weight being that of the impression's heaviest click ([`ClickWeight`]); conversion
///   weight = the largest `kind weight x value factor` of its attributed conversions where the
///   conversion label is 1, else 0.
/// * **Hard negatives** (`hard_negatives_per_positive` = H): candidates are in-scope impressions
///   with no engagement and no attributed conversion (mature or not). Each positive draws, on
///   its own, the H candidates of least seeded hash `mix(mix(mix(seed) ^ positive id) ^
///   candidate id)` (`mix` is splitmix64's finaliser; impression ids, not rows) among
///   its request's candidates, or, if its request has none, among the same user's candidates of
///   the same UTC day (`ts.div_euclid(86_400)`); fewer if there are fewer.
/// * **log q**: a positive's is `ln(count of its pin among positives / positives)`; a hard
///   negative's is `ln(count of its pin among drawn hard negatives / hard negatives drawn)`.
///
/// `eng_impression` is [`engagement_impressions`]`(log)`; `scope[i]` says whether impression
/// `i` may be a positive or a hard negative (`None`: all may).
///
/// # Errors
/// If `cfg` is invalid, a column of the impressions has the wrong length, `eng_impression` or
/// `scope` does not match the log, or the log has 2^32 - 1 impressions or more.
pub fn label(
    log: &EventLog,
    eng_impression: &[u32],
    cfg: &LabelConfig,
    cutoff: i64,
    scope: Option<&[bool]>,
) -> Result<Labelled> {
    cfg.validate()?;
    check_inputs(log, eng_impression, scope)?;
    let imps = &log.impressions;
    let rows = Rows {
        ts: &imps.ts,
        scope,
        click_window: cfg.click_window_s,
        cutoff,
    };
    let attribution =
        attribution::attribute(log, eng_impression, cfg.click_window_s, cfg.view_window_s);
    let (sig, orphan_engagements) = signals(log, eng_impression, &attribution, cfg);
    let impression = positives(&sig.flags, &rows);
    let columns = Columns::new(&impression, &sig, cfg, &rows);

    let h = cfg.hard_negatives_per_positive;
    let flags = &sig.flags;
    let is_candidate = |i: usize| rows.in_scope(i) && flags[i] == 0;
    let drawn = negatives::Pool {
        imps,
        is_candidate: &is_candidate,
        per_positive: h,
        seed: cfg.seed,
    }
    .draw(&impression);

    let pin_id = gather(&impression, &imps.pin_id);
    let hard_negative_pin_id: Vec<i64> = drawn
        .impressions
        .par_iter()
        .enumerate()
        .map(|(slot, &i)| match i {
            NONE => pin_id[slot / h],
            i => imps.pin_id[i as usize],
        })
        .collect();
    let mut log_q = vec![0.0f32; impression.len()];
    log_q::log_shares(
        pin_id
            .iter()
            .enumerate()
            .map(|(k, &p)| (p, k as u32))
            .collect(),
        &mut log_q,
    );
    let mut hard_negative_log_q = vec![0.0f32; drawn.impressions.len()];
    log_q::log_shares(
        drawn
            .impressions
            .iter()
            .zip(&hard_negative_pin_id)
            .enumerate()
            .filter(|(_, (i, _))| **i != NONE)
            .map(|(k, (_, &p))| (p, k as u32))
            .collect(),
        &mut hard_negative_log_q,
    );

    let stats = LabelStats {
        impressions: imps.len(),
        in_scope_impressions: scope.map_or(imps.len(), |s| s.iter().filter(|&&b| b).count()),
        orphan_engagements,
        positives: impression.len(),
        engagement_positives: count(&columns.label_engagement, 1),
        conversion_positives: count(&columns.label_conversion, CONVERTED_LABEL),
        masked_conversion_labels: count(&columns.label_conversion, MASKED_LABEL),
        conversions: log.conversions.len(),
        attributed_click_through: count(&attribution.touch, Some(Touch::Click)),
        attributed_view_through: count(&attribution.touch, Some(Touch::View)),
        unattributed: count(&attribution.touch, None),
        attributed_to_immature: attribution
            .impression
            .iter()
            .filter(|&&i| i != NONE && rows.in_scope(i as usize) && !rows.mature(i as usize))
            .count(),
        hard_negatives_from_request: drawn.from_request,
        hard_negatives_from_same_day: drawn.from_same_day,
        positives_without_hard_negative: if h == 0 {
            0
        } else {
            drawn.impressions.chunks(h).filter(|c| c[0] == NONE).count()
        },
    };
    Ok(Labelled {
        cutoff,
        user_id: gather(&impression, &imps.user_id),
        surface: gather(&impression, &imps.surface),
        impression,
        pin_id,
        label_engagement: columns.label_engagement,
        label_conversion: columns.label_conversion,
        weight_engagement: columns.weight_engagement,
        weight_conversion: columns.weight_conversion,
        log_q,
        hard_negatives_per_positive: h,
        hard_negative: drawn.impressions,
        hard_negative_pin_id,
        hard_negative_log_q,
        attribution,
        stats,
    })
}

/// Checks that the engagement rows and the scope fit the log.
fn check_inputs(log: &EventLog, eng_impression: &[u32], scope: Option<&[bool]>) -> Result<()> {
    let imps = &log.impressions;
    imps.check_lengths()?;
    check_rows(imps.len())?;
    let bad = |name, message| Err(Error::InvalidArgument { name, message });
    if eng_impression.len() != log.engagements.len() {
        return bad(
            "eng_impression",
            format!(
                "{} entries for {} engagements",
                eng_impression.len(),
                log.engagements.len()
            ),
        );
    }
    if let Some(i) = eng_impression
        .iter()
        .find(|&&i| i != NONE && i as usize >= imps.len())
    {
        return bad(
            "eng_impression",
            format!("row {i} is past the {} impressions", imps.len()),
        );
    }
    if let Some(s) = scope.filter(|s| s.len() != imps.len()) {
        return bad(
            "scope",
            format!("{} entries for {} impressions", s.len(), imps.len()),
        );
    }
    Ok(())
}

/// What the rules need to know of each impression row beyond its signals.
struct Rows<'a> {
    ts: &'a [i64],
    scope: Option<&'a [bool]>,
    click_window: i64,
    cutoff: i64,
}

impl Rows<'_> {
    fn in_scope(&self, i: usize) -> bool {
        self.scope.is_none_or(|s| s[i])
    }

    /// Whether row `i`'s conversion label is known at the cutoff.
    fn mature(&self, i: usize) -> bool {
        self.ts[i].saturating_add(self.click_window) <= self.cutoff
    }
}

/// The positive rows, in increasing order: in scope, and clicked, saved, or mature and converted.
fn positives(flags: &[u8], rows: &Rows<'_>) -> Vec<u32> {
    let is_positive = |i: usize| {
        rows.in_scope(i)
            && (flags[i] & (CLICKED | SAVED) != 0 || (flags[i] & CONVERTED != 0 && rows.mature(i)))
    };
    // Only flagged rows can be positives: a pass over the flags alone, in blocks.
    const BLOCK: usize = 1 << 16;
    flags
        .par_chunks(BLOCK)
        .enumerate()
        .flat_map_iter(|(b, block)| {
            block
                .iter()
                .enumerate()
                .filter(|&(_, &f)| f != 0)
                .map(move |(j, _)| b * BLOCK + j)
                .filter(|&i| is_positive(i))
                .map(|i| i as u32)
        })
        .collect()
}

/// `col[i]` for each row `i`, in order.
fn gather<T: Copy + Send + Sync>(rows: &[u32], col: &[T]) -> Vec<T> {
    rows.par_iter().map(|&i| col[i as usize]).collect()
}

fn count<T: PartialEq>(values: &[T], value: T) -> usize {
    values.iter().filter(|&v| *v == value).count()
}

/// The label and weight columns of the positives.
struct Columns {
    label_engagement: Vec<u8>,
    label_conversion: Vec<i8>,
    weight_engagement: Vec<f32>,
    weight_conversion: Vec<f32>,
}

impl Columns {
    fn new(impression: &[u32], sig: &Signals, cfg: &LabelConfig, rows: &Rows<'_>) -> Columns {
        let one = |i: u32| {
            let f = sig.flags[i as usize];
            let (clicked, saved) = (f & CLICKED != 0, f & SAVED != 0);
            let label_conversion = match (rows.mature(i as usize), f & CONVERTED != 0) {
                (false, _) => MASKED_LABEL,
                (true, true) => CONVERTED_LABEL,
                (true, false) => NOT_CONVERTED_LABEL,
            };
            let click_w = if clicked {
                weight_of(&sig.click_weight, i)
            } else {
                0.0
            };
            let save_w = if saved { cfg.save_weight } else { 0.0 };
            let conv_w = if label_conversion == CONVERTED_LABEL {
                weight_of(&sig.conversion_weight, i)
            } else {
                0.0
            };
            (
                u8::from(clicked || saved),
                label_conversion,
                click_w.max(save_w),
                conv_w,
            )
        };
        let all: Vec<(u8, i8, f32, f32)> = impression
            .par_iter()
            .with_min_len(1 << 12)
            .map(|&i| one(i))
            .collect();
        let mut c = Columns {
            label_engagement: Vec::with_capacity(all.len()),
            label_conversion: Vec::with_capacity(all.len()),
            weight_engagement: Vec::with_capacity(all.len()),
            weight_conversion: Vec::with_capacity(all.len()),
        };
        for (le, lc, we, wc) in all {
            c.label_engagement.push(le);
            c.label_conversion.push(lc);
            c.weight_engagement.push(we);
            c.weight_conversion.push(wc);
        }
        c
    }
}
