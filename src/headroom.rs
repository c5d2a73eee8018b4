//! `convcg headroom`: how much a synthetic marketplace lets conversions matter, measured on its
//! ground truth with no model trained (docs/design.md, Headroom).
//!
//! Two ceilings rank every pin for every query by the truth under the logging policy: the
//! *oracle* by expected conversions per request, the *oracle of clicks* by expected clicks per
//! request under the same exposure (the best a retriever that learns from engagement alone can
//! do). Their gap on conversion recall@K and in the simulated A/B (each oracle's top K served
//! through the auction, on traffic drawn from the marketplace) is the headroom: all that
//! conversion labels can add on this world.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use convcg_data::{Dataset, GroundTruth, Marketplace, QueryKey};
use convcg_eval::{
    Bootstrap, BootstrapInterval, OnlineLift, Par, RECALL_KS, RatioParts, TopK, recall_at_k,
};

use crate::config::RunConfig;
use crate::online::{OnlineFigures, online_metrics, traffic_requests};
use crate::per_query::{OnlineLiftIntervals, QueryOutcomes, QuerySet};
use crate::run::truth_top_k;

/// What `convcg headroom` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Headroom {
    /// The marketplace's seed.
    pub seed: u64,
    /// The marketplace's realised properties (`convcg train` prints them too).
    #[serde(skip)]
    pub realised: Option<convcg_data::RealisedProperties>,
    /// Conversion eval queries (reported conversions in the eval window).
    pub conversion_queries: usize,
    /// Median of the distinct pins each user with an impression in the eval window was shown
    /// there.
    pub shown_per_user_median: usize,
    /// Users with an impression in the eval window.
    pub users_shown: usize,
    /// The oracle's conversion recall@K (`recall@K` keys, as in `metrics.json`).
    pub oracle: BTreeMap<String, f64>,
    /// The oracle of clicks' conversion recall@K.
    pub oracle_clicks: BTreeMap<String, f64>,
    /// Requests served in the simulated A/B (traffic requests, or the conversion eval queries
    /// when `[online] traffic_requests` is 0).
    pub online_requests: usize,
    /// Whether the A/B ran on traffic (else on the conversion eval queries).
    pub online_on_traffic: bool,
    /// Candidates each oracle hands the auction (`[online] candidates`, the K of the A/B).
    pub candidates: usize,
    /// The oracle's simulated serving.
    pub oracle_online: OnlineFigures,
    /// The oracle of clicks' simulated serving.
    pub oracle_clicks_online: OnlineFigures,
    /// The oracle's lifts over the oracle of clicks, in percent.
    pub lift: OnlineLift,
    /// Paired bootstrap 95% interval, over the conversion eval queries, of the offline headroom:
    /// the oracle's mean conversion recall@100 over the oracle of clicks', in percent.
    pub offline_interval: Option<BootstrapInterval>,
    /// Paired bootstrap 95% intervals, over the served requests, of [`Headroom::lift`].
    pub lift_intervals: Option<OnlineLiftIntervals>,
}

impl Headroom {
    /// The offline headroom: the oracle's conversion recall@K over the oracle of clicks', in
    /// percent; `None` if either is missing or the latter is 0.
    pub fn offline_percent(&self, k: usize) -> Option<f64> {
        let key = format!("recall@{k}");
        let (o, c) = (self.oracle.get(&key)?, self.oracle_clicks.get(&key)?);
        (*c > 0.0).then(|| 100.0 * (o / c - 1.0))
    }

    /// The printed report.
    pub fn table(&self) -> String {
        let mut out = String::new();
        if let Some(r) = &self.realised {
            let _ = writeln!(out, "{r}");
        }
        let k = self.candidates;
        let _ = writeln!(
            out,
            "headroom of the synthetic marketplace (seed {}), no model trained",
            self.seed
        );
        let _ = writeln!(
            out,
            "distinct pins a user is shown in the eval window: median {} ({} users), beside K = {k}",
            self.shown_per_user_median, self.users_shown
        );
        let _ = writeln!(
            out,
            "\nconversion recall@K on {} eval queries   oracle   oracle of clicks      gap",
            self.conversion_queries
        );
        for &k in RECALL_KS.iter() {
            let key = format!("recall@{k}");
            if let (Some(o), Some(c)) = (self.oracle.get(&key), self.oracle_clicks.get(&key)) {
                let gap = self
                    .offline_percent(k)
                    .map_or_else(|| "-".to_owned(), |g| format!("{g:+.1}%"));
                let _ = writeln!(out, "  {key:<38}{o:>8.4}{c:>19.4}{gap:>9}");
            }
        }
        let on = if self.online_on_traffic {
            "traffic requests"
        } else {
            "conversion eval queries"
        };
        let _ = writeln!(
            out,
            "\nsimulated A/B on {} {on} (each oracle's top K into the auction)",
            self.online_requests
        );
        let _ = writeln!(
            out,
            "  {:<18}{:>12}{:>10}{:>8}",
            "retriever", "conv/1k req", "i2c %", "RoAS"
        );
        for (name, f) in [
            ("oracle", &self.oracle_online),
            ("oracle of clicks", &self.oracle_clicks_online),
        ] {
            let _ = writeln!(
                out,
                "  {name:<18}{:>12.4}{:>10.4}{:>8.3}",
                f.conversion_volume.unwrap_or(f64::NAN),
                100.0 * f.impression_to_conversion.unwrap_or(f64::NAN),
                f.roas.unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(
            out,
            "  oracle vs oracle of clicks: {}",
            self.lift.paper_style()
        );
        if let Some(ci) = &self.lift_intervals {
            let one = |name: &str, x: Option<BootstrapInterval>| {
                x.map_or_else(String::new, |x| format!(" {name} {}", x.bracket(1, "%")))
            };
            let _ = writeln!(
                out,
                "  95% intervals:{}{}{}",
                one("conversion volume", ci.conversion_volume),
                one("impression-to-conversion", ci.impression_to_conversion),
                one("RoAS", ci.roas)
            );
        }
        let pct = |x: Option<f64>, ci: Option<BootstrapInterval>| {
            let figure = x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:+.1}%"));
            match ci {
                Some(ci) => format!("{figure} {}", ci.bracket(1, "%")),
                None => figure,
            }
        };
        let _ = writeln!(
            out,
            "\nheadroom: {} offline (conversion recall@100), {} online (conversion volume); \
             the marketplace's targets are at least +15% and +10% (docs/marketplace.md); \
             intervals: paired bootstrap 95% over the queries and requests",
            pct(self.offline_percent(100), self.offline_interval),
            pct(
                self.lift.conversion_volume,
                self.lift_intervals.and_then(|i| i.conversion_volume)
            )
        );
        out
    }
}

/// Both oracles' top `k` for `keys`: (oracle, oracle of clicks).
fn oracle_tops(truth: &GroundTruth, keys: &[QueryKey], k: usize, par: Par) -> (TopK, TopK) {
    (
        truth_top_k(truth, keys, k, par, GroundTruth::expected_conversion_scores),
        truth_top_k(truth, keys, k, par, GroundTruth::expected_click_scores),
    )
}

/// Measures the headroom of `cfg`'s marketplace (generated with `cfg.seed`): both oracles'
/// conversion recall@K on the eval queries, and their simulated serving on `[online]
/// traffic_requests` requests of the eval window (on the conversion eval queries when that is 0).
///
/// # Errors
/// If the configuration is invalid, the marketplace cannot be generated, or the eval window holds
/// no conversion query.
pub fn headroom(cfg: &RunConfig, par: Par) -> Result<Headroom> {
    let market = Marketplace::generate(&cfg.synth, cfg.seed, &|_, _| {})?;
    let data = Dataset::build(&market.log, Some(&market.true_conversions), &cfg.data)?;
    let eval = data.eval();
    let conv = &eval.conversion;
    if conv.keys.is_empty() {
        bail!("the eval window holds no conversion query: no headroom to measure");
    }
    let truth = &market.truth;
    let k = *RECALL_KS.iter().max().unwrap_or(&1000);
    let (oracle_top, clicks_top) = oracle_tops(truth, &conv.keys, k, par);
    let flat = |top: &TopK| -> Result<BTreeMap<String, f64>> {
        Ok(recall_at_k(top, &conv.relevant, &RECALL_KS)?.recall)
    };
    let per_query = |top: &TopK| -> Result<Vec<f64>> {
        QuerySet::measure(&conv.keys, &conv.relevant, top, &[100])?
            .recall(100)
            .context("no recall@100 per query")
    };
    let ones = vec![1.0; conv.keys.len()];
    let (oracle_100, clicks_100) = (per_query(&oracle_top)?, per_query(&clicks_top)?);
    let offline_interval = Bootstrap::default().lift(
        RatioParts {
            num: &clicks_100,
            den: &ones,
        },
        RatioParts {
            num: &oracle_100,
            den: &ones,
        },
    )?;
    let (shown_per_user_median, users_shown) = market.distinct_pins_shown(eval.window_start);

    let online_on_traffic = cfg.online.traffic_requests > 0;
    let served_keys = if online_on_traffic {
        traffic_requests(&market, eval, cfg.online.traffic_requests)?
    } else {
        conv.keys.clone()
    };
    let (oracle_served, clicks_served) = if online_on_traffic {
        oracle_tops(truth, &served_keys, cfg.online.candidates, par)
    } else {
        (oracle_top.clone(), clicks_top.clone())
    };
    let online = online_metrics(
        &market,
        &served_keys,
        &[
            ("oracle", &oracle_served),
            ("oracle_clicks", &clicks_served),
        ],
        &cfg.online,
    )?;
    let figures = |name: &str| online.retrievers.get(name).cloned().unwrap_or_default();
    let outcomes = |name: &str| {
        online
            .per_query
            .get(name)
            .map(|o| QueryOutcomes::from_outcomes(o))
    };
    let lift_intervals = match (outcomes("oracle_clicks"), outcomes("oracle")) {
        (Some(base), Some(new)) => Some(OnlineLiftIntervals::between(
            &base,
            &new,
            &Bootstrap::default(),
        )?),
        _ => None,
    };
    let oracle_online = figures("oracle");
    let oracle_clicks_online = figures("oracle_clicks");
    Ok(Headroom {
        seed: cfg.seed,
        realised: Some(market.realised()),
        conversion_queries: conv.keys.len(),
        shown_per_user_median,
        users_shown,
        oracle: flat(&oracle_top)?,
        oracle_clicks: flat(&clicks_top)?,
        online_requests: served_keys.len(),
        online_on_traffic,
        candidates: cfg.online.candidates,
        lift: OnlineLift::between(&oracle_clicks_online.outcome, &oracle_online.outcome),
        offline_interval,
        lift_intervals,
        oracle_online,
        oracle_clicks_online,
    })
}
