//! Simulated serving: what a retriever's candidates would earn downstream.
//!
//! Each query's first [`AuctionConfig::candidates`] retrieved items enter an auction that ranks
//! them by expected cost per impression under each ad's campaign objective: `p_click x bid` for a
//! click campaign (the true click probability on the query's surface times the advertiser's
//! cost-per-click bid), `target_cpa x p_click x p_conv|click` for a conversion campaign (as
//! oCPM / target-CPA auctions do), and shows at most [`AuctionConfig::slots`] of them whose
//! expected cost per impression is at least [`AuctionConfig::reserve`]. Equal values go to the
//! smaller item id, so the outcome
//! depends on the candidate set alone, not on the order the retriever listed it in. The ad in
//! slot `s` (from 0) is looked at with probability `exam(s) = (1 + s)^-position_decay`
//! (position-based examination; `position_decay = 0` looks at every slot).
//!
//! Outcomes are the ground truth's *expected* values, so two runs on the same queries differ only
//! through their candidates, never through sampling noise. Summed over shown ads:
//!
//! - impressions `= Σ exam(s)` (examined ads),
//! - clicks `= Σ exam(s) p_click`,
//! - conversions `= Σ exam(s) (p_click p_conv|click + (1 - p_click) p_view)`, click-through plus
//!   view-through conversions of an examined ad,
//! - value `= Σ exam(s) p_conversion(s) value`, with `value` a conversion's expected value,
//! - cost `= Σ exam(s) x` the ad's expected cost per impression (a click campaign pays its bid per
//!   click, a conversion campaign its target CPA per click-through conversion).
//!
//! Derived ([`ServingOutcome`]): conversion volume (conversions per 1,000 queries),
//! impression-to-conversion rate (conversions / impressions) and return on ad spend (value /
//! cost). Because a better candidate set changes how many ads clear the reserve as well as which,
//! the three lifts ([`OnlineLift`]) differ.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::topk::TopK;

/// The downstream auction's settings. Its `Default` is convcg's simulated serving: the top 100
/// candidates, 5 slots, a reserve of 0.05 expected cost per impression (a CPM of 50), and
/// examination `(1 + slot)^-0.7`. The reserve binds on the default synthetic marketplace (whose
/// click-through rates are higher than real ads'), so a better candidate set shows more ads as
/// well as better ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuctionConfig {
    /// How many of each query's retrieved items enter the auction (the retriever's K).
    pub candidates: usize,
    /// Most ads shown per query.
    pub slots: usize,
    /// Least expected cost per impression (`p_click x bid`) an ad must reach to be shown.
    pub reserve: f64,
    /// Exponent of the position-based examination `(1 + slot)^-position_decay`.
    pub position_decay: f64,
    /// Requests of the simulated A/B on traffic: drawn from the marketplace's traffic model in the
    /// eval window, each served through every retriever's top K and this auction (0: no A/B on
    /// traffic, only the eval queries are served).
    pub traffic_requests: usize,
}

impl Default for AuctionConfig {
    fn default() -> Self {
        AuctionConfig {
            candidates: 100,
            slots: 5,
            reserve: 0.05,
            position_decay: 0.7,
            traffic_requests: 20_000,
        }
    }
}

impl AuctionConfig {
    /// Checks every key: `candidates` and `slots` at least 1, `reserve` finite and >= 0,
    /// `position_decay` finite and >= 0.
    ///
    /// # Errors
    /// [`Error::InvalidAuction`] naming the first bad key.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &'static str, value: String, allowed: &'static str| {
            Err(Error::InvalidAuction {
                key,
                value,
                allowed,
            })
        };
        if self.candidates == 0 {
            return bad("candidates", "0".into(), "an integer >= 1");
        }
        if self.slots == 0 {
            return bad("slots", "0".into(), "an integer >= 1");
        }
        if !(self.reserve.is_finite() && self.reserve >= 0.0) {
            return bad("reserve", self.reserve.to_string(), "a finite number >= 0");
        }
        if !(self.position_decay.is_finite() && self.position_decay >= 0.0) {
            return bad(
                "position_decay",
                self.position_decay.to_string(),
                "a finite number >= 0",
            );
        }
        Ok(())
    }

    /// Probability that the ad in `slot` (from 0) is looked at: `(1 + slot)^-position_decay`.
    pub fn examination(&self, slot: usize) -> f64 {
        (1.0 + slot as f64).powf(-self.position_decay)
    }
}

/// What the ground truth says about one candidate of one query.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CandidateTruth {
    /// Probability that an examined impression is clicked, on the query's surface.
    pub p_click: f64,
    /// Probability that a click leads to a conversion.
    pub p_conversion_given_click: f64,
    /// Probability that an examined, unclicked impression leads to a (view-through) conversion;
    /// 0 where the truth has none.
    pub p_view_through: f64,
    /// Expected value of one conversion (0 where conversions carry none).
    pub value: f64,
    /// The advertiser's cost-per-click bid (what a click campaign pays per click).
    pub bid: f64,
    /// The advertiser's target cost per action if it runs a conversion campaign (what it pays
    /// per click-through conversion); `None` for a click campaign.
    pub target_cpa: Option<f64>,
}

impl CandidateTruth {
    /// Probability that an examined impression converts, by click or view.
    pub fn p_conversion(&self) -> f64 {
        self.p_click * self.p_conversion_given_click + (1.0 - self.p_click) * self.p_view_through
    }

    /// The auction's score: expected cost per impression, `p_click x bid` for a click campaign,
    /// `target_cpa x p_click x p_conversion_given_click` for a conversion campaign.
    pub fn expected_cost_per_impression(&self) -> f64 {
        match self.target_cpa {
            None => self.p_click * self.bid,
            Some(t) => t * self.p_click * self.p_conversion_given_click,
        }
    }

    fn check(&self, query: usize, item: u32) -> Result<()> {
        let probability = |x: f64| (0.0..=1.0).contains(&x);
        let amount = |x: f64| x.is_finite() && x >= 0.0;
        let what = if !probability(self.p_click) {
            "p_click"
        } else if !probability(self.p_conversion_given_click) {
            "p_conversion_given_click"
        } else if !probability(self.p_view_through) {
            "p_view_through"
        } else if !amount(self.value) {
            "value"
        } else if !amount(self.bid) {
            "bid"
        } else if !self.target_cpa.is_none_or(amount) {
            "target_cpa"
        } else {
            return Ok(());
        };
        Err(Error::BadCandidateTruth { query, item, what })
    }
}

/// Expected outcomes of serving a set of queries (see the module's doc for each sum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServingOutcome {
    /// Queries served.
    pub queries: usize,
    /// Queries with at least one ad above the reserve.
    pub queries_with_ads: usize,
    /// Ads placed in a slot (not weighted by examination).
    pub ads_shown: usize,
    /// Expected examined impressions, `Σ exam`.
    pub impressions: f64,
    /// Expected clicks.
    pub clicks: f64,
    /// Expected conversions, click- and view-through.
    pub conversions: f64,
    /// Expected conversion value.
    pub value: f64,
    /// Expected advertiser cost (clicks times bids, click-through conversions times target CPAs).
    pub cost: f64,
}

/// Ratio of two totals; `None` when the denominator is 0.
fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    (denominator > 0.0).then(|| numerator / denominator)
}

impl ServingOutcome {
    /// Conversion volume: expected conversions per 1,000 queries, so that runs with different
    /// numbers of eval queries compare; `None` without queries.
    pub fn conversion_volume(&self) -> Option<f64> {
        ratio(1000.0 * self.conversions, self.queries as f64)
    }

    /// Impression-to-conversion rate: conversions / impressions; `None` when nothing was shown.
    pub fn impression_to_conversion(&self) -> Option<f64> {
        ratio(self.conversions, self.impressions)
    }

    /// Return on ad spend: value / cost; `None` when nothing was paid.
    pub fn roas(&self) -> Option<f64> {
        ratio(self.value, self.cost)
    }

    /// Adds another set of queries' outcomes to these.
    pub fn add(&mut self, other: &ServingOutcome) {
        self.queries += other.queries;
        self.queries_with_ads += other.queries_with_ads;
        self.ads_shown += other.ads_shown;
        self.impressions += other.impressions;
        self.clicks += other.clicks;
        self.conversions += other.conversions;
        self.value += other.value;
        self.cost += other.cost;
    }
}

/// One query's auction: `candidates` as (item id, truth) pairs, in any order, each id once.
/// Returns the shown ads best first as (item id, examination probability), and the query's
/// outcome.
///
/// # Errors
/// [`Error::BadCandidateTruth`] (with `query` as given) if a probability is outside [0, 1] or a
/// value or bid is negative or not finite; those of [`AuctionConfig::validate`].
pub fn serve_query(
    query: usize,
    candidates: &[(u32, CandidateTruth)],
    cfg: &AuctionConfig,
) -> Result<(Vec<(u32, f64)>, ServingOutcome)> {
    cfg.validate()?;
    for (item, t) in candidates {
        t.check(query, *item)?;
    }
    let mut eligible: Vec<&(u32, CandidateTruth)> = candidates
        .iter()
        .filter(|(_, t)| t.expected_cost_per_impression() >= cfg.reserve)
        .collect();
    // Highest expected cost per impression first; ties to the smaller id (total_cmp: no NaN
    // gets here, `check` rejected them).
    eligible.sort_by(|(a, ta), (b, tb)| {
        tb.expected_cost_per_impression()
            .total_cmp(&ta.expected_cost_per_impression())
            .then(a.cmp(b))
    });
    eligible.truncate(cfg.slots);
    let mut out = ServingOutcome {
        queries: 1,
        queries_with_ads: usize::from(!eligible.is_empty()),
        ads_shown: eligible.len(),
        ..ServingOutcome::default()
    };
    let mut shown = Vec::with_capacity(eligible.len());
    for (slot, (item, t)) in eligible.into_iter().enumerate() {
        let exam = cfg.examination(slot);
        let conversions = exam * t.p_conversion();
        out.impressions += exam;
        out.clicks += exam * t.p_click;
        out.conversions += conversions;
        out.value += conversions * t.value;
        out.cost += exam * t.expected_cost_per_impression();
        shown.push((*item, exam));
    }
    Ok((shown, out))
}

/// Serves every query of `top`: the first `cfg.candidates` items of each list enter
/// [`serve_query`]'s auction with `truth(query, item)` as their ground truth, and the outcomes are
/// summed in query order (so the totals are the same on every run).
///
/// # Errors
/// [`Error::MalformedTopK`] if `top`'s fields disagree, [`Error::CutoffExceedsK`] if the lists
/// are shorter than `cfg.candidates`, and those of [`serve_query`].
pub fn simulate_serving(
    top: &TopK,
    cfg: &AuctionConfig,
    truth: impl Fn(usize, u32) -> CandidateTruth,
) -> Result<ServingOutcome> {
    let mut total = ServingOutcome::default();
    for outcome in serve_each_query(top, cfg, truth)? {
        total.add(&outcome);
    }
    Ok(total)
}

/// [`simulate_serving`]'s auction, one outcome per query of `top` in query order: what a paired
/// comparison of two retrievers over the same queries resamples.
///
/// # Errors
/// Those of [`simulate_serving`].
pub fn serve_each_query(
    top: &TopK,
    cfg: &AuctionConfig,
    truth: impl Fn(usize, u32) -> CandidateTruth,
) -> Result<Vec<ServingOutcome>> {
    cfg.validate()?;
    top.check_shape()?;
    if cfg.candidates > top.k {
        return Err(Error::CutoffExceedsK {
            cutoff: cfg.candidates,
            k: top.k,
        });
    }
    let mut out = Vec::with_capacity(top.num_queries());
    let mut candidates = Vec::with_capacity(cfg.candidates);
    for q in 0..top.num_queries() {
        candidates.clear();
        candidates.extend(
            top.row(q)[..cfg.candidates]
                .iter()
                .map(|&item| (item, truth(q, item))),
        );
        out.push(serve_query(q, &candidates, cfg)?.1);
    }
    Ok(out)
}

/// Lifts of one outcome over another, in percent: `100 (new / base - 1)`; `None` where the base's
/// figure (or the new one's) is undefined or the base's is 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineLift {
    /// Lift in conversion volume (conversions per 1,000 queries).
    pub conversion_volume: Option<f64>,
    /// Lift in the impression-to-conversion rate.
    pub impression_to_conversion: Option<f64>,
    /// Lift in return on ad spend.
    pub roas: Option<f64>,
}

/// `100 (new / base - 1)`, `None` unless both are defined and `base > 0`.
pub fn lift_percent(base: Option<f64>, new: Option<f64>) -> Option<f64> {
    match (base, new) {
        (Some(b), Some(n)) if b > 0.0 => Some(100.0 * (n / b - 1.0)),
        _ => None,
    }
}

impl OnlineLift {
    /// The lifts of `new` over `base` (see [`lift_percent`]).
    pub fn between(base: &ServingOutcome, new: &ServingOutcome) -> OnlineLift {
        OnlineLift {
            conversion_volume: lift_percent(base.conversion_volume(), new.conversion_volume()),
            impression_to_conversion: lift_percent(
                base.impression_to_conversion(),
                new.impression_to_conversion(),
            ),
            roas: lift_percent(base.roas(), new.roas()),
        }
    }

    /// The source paper's way of reporting them: `+2.3% conversion volume, +2.7% impression-to-conversion,
    /// +3.1% RoAS` (one decimal, signed; `n/a` for an undefined lift).
    pub fn paper_style(&self) -> String {
        let f = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:+.1}%"));
        format!(
            "{} conversion volume, {} impression-to-conversion, {} RoAS",
            f(self.conversion_volume),
            f(self.impression_to_conversion),
            f(self.roas)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_near(got: f64, want: f64) {
        assert!(
            (got - want).abs() <= 1e-12 * want.abs().max(1.0),
            "{got} != {want}"
        );
    }

    fn t(p_click: f64, bid: f64) -> CandidateTruth {
        CandidateTruth {
            p_click,
            p_conversion_given_click: 0.1,
            p_view_through: 0.0,
            value: 10.0,
            bid,
            target_cpa: None,
        }
    }

    #[test]
    fn a_conversion_campaign_is_ranked_and_charged_by_its_target_cpa() {
        let cfg = AuctionConfig {
            slots: 1,
            reserve: 0.0,
            position_decay: 0.0,
            ..AuctionConfig::default()
        };
        // Click campaign: 0.1 x 1.0 = 0.1 per impression. Conversion campaign: 20 x 0.05 x 0.2
        // = 0.2 per impression, so it takes the one slot although its bid and click rate are lower.
        let click = (1, t(0.1, 1.0));
        let conversion = (
            2,
            CandidateTruth {
                p_conversion_given_click: 0.2,
                target_cpa: Some(20.0),
                ..t(0.05, 0.5)
            },
        );
        let (shown, out) = serve_query(0, &[click, conversion], &cfg).unwrap();
        assert_eq!(shown, vec![(2, 1.0)]);
        assert_near(out.cost, 20.0 * 0.05 * 0.2);
        assert_near(out.conversions, 0.05 * 0.2);
        let bad = CandidateTruth {
            target_cpa: Some(-1.0),
            ..conversion.1
        };
        let err = serve_query(0, &[(2, bad)], &cfg).unwrap_err();
        assert!(matches!(
            err,
            Error::BadCandidateTruth {
                what: "target_cpa",
                ..
            }
        ));
    }

    #[test]
    fn examination_decays_with_the_slot() {
        let cfg = AuctionConfig::default();
        assert_eq!(cfg.examination(0), 1.0);
        assert_near(cfg.examination(3), 4f64.powf(-0.7));
        let flat = AuctionConfig {
            position_decay: 0.0,
            ..cfg
        };
        assert_eq!(flat.examination(4), 1.0);
    }

    #[test]
    fn the_order_of_the_candidates_does_not_matter() {
        let cfg = AuctionConfig {
            slots: 2,
            reserve: 0.0,
            ..AuctionConfig::default()
        };
        let a = [(5, t(0.1, 1.0)), (2, t(0.2, 0.5)), (9, t(0.3, 1.0))];
        let b = [a[2], a[0], a[1]];
        assert_eq!(
            serve_query(0, &a, &cfg).unwrap(),
            serve_query(0, &b, &cfg).unwrap()
        );
        // Pins 2 and 5 tie at 0.1: the smaller id takes the second slot.
        assert_eq!(serve_query(0, &a, &cfg).unwrap().0[1].0, 2);
    }

    #[test]
    fn bad_settings_and_truths_are_errors() {
        let bad = [
            AuctionConfig {
                slots: 0,
                ..AuctionConfig::default()
            },
            AuctionConfig {
                candidates: 0,
                ..AuctionConfig::default()
            },
            AuctionConfig {
                reserve: -1.0,
                ..AuctionConfig::default()
            },
            AuctionConfig {
                position_decay: f64::NAN,
                ..AuctionConfig::default()
            },
        ];
        for cfg in bad {
            assert!(matches!(cfg.validate(), Err(Error::InvalidAuction { .. })));
        }
        let cfg = AuctionConfig::default();
        let err = serve_query(3, &[(7, t(1.5, 1.0))], &cfg).unwrap_err();
        assert_eq!(
            err,
            Error::BadCandidateTruth {
                query: 3,
                item: 7,
                what: "p_click"
            }
        );
        let err = serve_query(0, &[(1, t(0.5, f64::NAN))], &cfg).unwrap_err();
        assert!(matches!(err, Error::BadCandidateTruth { what: "bid", .. }));
    }
}
