//! What [`Dataset::build`](super::Dataset::build) found and made.

use std::fmt;

use crate::labels::LabelStats;
use crate::stats_table::{attributed_row, hard_negative_rows, write_rows};

use super::vocab::Vocab;

/// What [`Dataset::build`](super::Dataset::build) found and made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DatasetStats {
    /// Impressions in the log.
    pub impressions: usize,
    /// Impressions before the eval window.
    pub train_impressions: usize,
    /// Impressions in the eval window.
    pub eval_impressions: usize,
    /// Engagements whose impression is not in the log (dropped).
    pub orphan_engagements: usize,
    /// Training positives (examples).
    pub train_positives: usize,
    /// Of them, with engagement label 1.
    pub train_engagement_examples: usize,
    /// Of them, with conversion label 1.
    pub train_conversion_examples: usize,
    /// Of them, with a masked conversion label (impressions within the click window of the
    /// cutoff).
    pub masked_conversion_labels: usize,
    /// Reported conversions in the log.
    pub conversions: usize,
    /// Attributed to a click.
    pub attributed_click_through: usize,
    /// Attributed to an impression without a (qualifying) click.
    pub attributed_view_through: usize,
    /// Not attributed (dropped).
    pub unattributed: usize,
    /// Of the unattributed, those naming a user or pin missing from the log's tables.
    pub unknown_id_conversions: usize,
    /// Attributed to an immature training impression: no positive comes of them.
    pub attributed_to_immature: usize,
    /// Attributed conversions at or after the window start whose impression was before it.
    /// Conversions are not filtered by the cutoff: they label the impression if it is mature.
    pub straddling_conversions: usize,
    /// Hard negatives drawn from the positive's request.
    pub hard_negatives_from_request: usize,
    /// Hard negatives drawn from the same user's impressions of the same UTC day.
    pub hard_negatives_from_same_day: usize,
    /// Training positives without any hard negative (when some were asked for).
    pub positives_without_hard_negative: usize,
    /// Conversions held out of labelling by the `last_conversion` protocol (each query's own
    /// and the user's later ones); 0 under the time protocol.
    pub held_out_conversions: usize,
    /// Conversion eval queries kept.
    pub eval_conversion_queries: usize,
    /// Engagement eval queries kept.
    pub eval_engagement_queries: usize,
    /// Users in the dictionary (OOV row excluded).
    pub user_vocab: usize,
    /// Pins in the dictionary (OOV row excluded).
    pub pin_vocab: usize,
    /// Advertisers in the dictionary (OOV row excluded).
    pub advertiser_vocab: usize,
    /// Categories in the dictionary (OOV row excluded).
    pub category_vocab: usize,
    /// Brands in the dictionary (OOV row excluded).
    pub brand_vocab: usize,
    /// Queries in the dictionary (OOV row excluded).
    pub query_vocab: usize,
}

impl fmt::Display for DatasetStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows = vec![
            (
                "impressions (train / eval)",
                format!(
                    "{} ({} / {})",
                    self.impressions, self.train_impressions, self.eval_impressions
                ),
            ),
            ("orphan engagements", self.orphan_engagements.to_string()),
            (
                "train positives: engagement / conversion / masked",
                format!(
                    "{}: {} / {} / {}",
                    self.train_positives,
                    self.train_engagement_examples,
                    self.train_conversion_examples,
                    self.masked_conversion_labels
                ),
            ),
            ("reported conversions", self.conversions.to_string()),
            attributed_row(self.attributed_click_through, self.attributed_view_through),
            (
                "unattributed (unknown ids)",
                format!("{} ({})", self.unattributed, self.unknown_id_conversions),
            ),
            (
                "attributed to immature train impressions",
                self.attributed_to_immature.to_string(),
            ),
            (
                "straddling the split",
                self.straddling_conversions.to_string(),
            ),
            (
                "held out of labels (last_conversion)",
                self.held_out_conversions.to_string(),
            ),
        ];
        rows.extend(hard_negative_rows(
            self.hard_negatives_from_request,
            self.hard_negatives_from_same_day,
            self.positives_without_hard_negative,
        ));
        rows.extend([
            (
                "eval queries: conversion",
                self.eval_conversion_queries.to_string(),
            ),
            (
                "eval queries: engagement",
                self.eval_engagement_queries.to_string(),
            ),
            (
                "vocab users / pins",
                format!("{} / {}", self.user_vocab, self.pin_vocab),
            ),
            (
                "vocab advertisers / categories / brands",
                format!(
                    "{} / {} / {}",
                    self.advertiser_vocab, self.category_vocab, self.brand_vocab
                ),
            ),
            ("vocab queries", self.query_vocab.to_string()),
        ]);
        write_rows(f, &rows)
    }
}

/// The share of training positives with a masked conversion label from which
/// [`DatasetStats::masking_warning`] warns.
pub const MASKED_WARNING_SHARE: f64 = 0.9;

impl DatasetStats {
    /// A warning when (nearly) every training positive's conversion label is masked although
    /// the log has conversions: the conversion task then learns from almost nothing, most often
    /// because `[data] click_window_days` (the maturity window) is as long as the log.
    pub fn masking_warning(&self) -> Option<String> {
        let (masked, positives) = (self.masked_conversion_labels, self.train_positives);
        if positives == 0 || self.conversions == 0 {
            return None;
        }
        let share = masked as f64 / positives as f64;
        (share >= MASKED_WARNING_SHARE).then(|| {
            format!(
                "warning: {masked} of {positives} training positives ({:.0}%) have a masked conversion label, so the conversion task learns from almost none of the log's {} conversions: a label is known only for impressions at least `[data] click_window_days` before the cutoff; set it to the log's real attribution window (for example \"2h\" on a log of a few hours)",
                100.0 * share,
                self.conversions
            )
        })
    }

    /// The counts of the training part's labels and of the dictionaries; the eval counts are
    /// filled in by [`eval_set`].
    pub(crate) fn new(ls: &LabelStats, vocab: &Vocab) -> DatasetStats {
        DatasetStats {
            impressions: ls.impressions,
            train_impressions: ls.in_scope_impressions,
            eval_impressions: ls.impressions - ls.in_scope_impressions,
            orphan_engagements: ls.orphan_engagements,
            train_positives: ls.positives,
            train_engagement_examples: ls.engagement_positives,
            train_conversion_examples: ls.conversion_positives,
            masked_conversion_labels: ls.masked_conversion_labels,
            conversions: ls.conversions,
            attributed_click_through: ls.attributed_click_through,
            attributed_view_through: ls.attributed_view_through,
            unattributed: ls.unattributed,
            attributed_to_immature: ls.attributed_to_immature,
            hard_negatives_from_request: ls.hard_negatives_from_request,
            hard_negatives_from_same_day: ls.hard_negatives_from_same_day,
            positives_without_hard_negative: ls.positives_without_hard_negative,
            user_vocab: vocab.users,
            pin_vocab: vocab.pins,
            advertiser_vocab: vocab.advertisers,
            category_vocab: vocab.categories,
            brand_vocab: vocab.brands,
            query_vocab: vocab.queries,
            ..DatasetStats::default()
        }
    }
}
