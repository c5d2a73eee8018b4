//! Simulated online metrics of a run on the synthetic marketplace: every retriever's conversion
//! top K served through `convcg_eval`'s auction, with the marketplace's ground truth deciding the
//! outcome (docs/design.md, Simulated serving).

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use convcg_data::{EvalSet, Marketplace, QueryKey};
use convcg_eval::{AuctionConfig, CandidateTruth, OnlineLift, ServingOutcome, TopK};

/// Mixed into the marketplace's seed for the traffic requests, so that they are not drawn from
/// the stream of anything else seeded with it, and are the same for every run on that marketplace
/// whatever the run's own seed (so that two runs' traffic lifts pair request by request).
const TRAFFIC_SEED: u64 = 0x7AFF_1C00_0000_0001;

/// The simulated A/B's requests: `requests` draws of the marketplace's traffic in the eval window
/// of `eval` ([`Marketplace::traffic`]), seeded by the marketplace alone.
///
/// # Errors
/// Those of [`Marketplace::traffic`].
pub(crate) fn traffic_requests(
    market: &Marketplace,
    eval: &EvalSet,
    requests: usize,
) -> Result<Vec<QueryKey>> {
    Ok(market.traffic(
        requests,
        eval.window_start,
        eval.window_end.saturating_add(1),
        market.truth.seed() ^ TRAFFIC_SEED,
    )?)
}

/// The retriever every lift is measured against.
pub const LIFT_BASELINE: &str = "popularity";

/// One retriever's simulated serving: the expected totals over the eval queries and the three
/// figures the seed reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineFigures {
    /// Queries, ads shown, and expected impressions, clicks, conversions, value and cost.
    #[serde(flatten)]
    pub outcome: ServingOutcome,
    /// Expected conversions per 1,000 eval queries (`None` without queries).
    pub conversion_volume: Option<f64>,
    /// Conversions / impressions (`None` when no ad was shown).
    pub impression_to_conversion: Option<f64>,
    /// Return on ad spend, value / cost (`None` when nothing was paid).
    pub roas: Option<f64>,
}

impl From<ServingOutcome> for OnlineFigures {
    fn from(outcome: ServingOutcome) -> Self {
        OnlineFigures {
            conversion_volume: outcome.conversion_volume(),
            impression_to_conversion: outcome.impression_to_conversion(),
            roas: outcome.roas(),
            outcome,
        }
    }
}

/// The `online` section of `metrics.json`: how the conversion task's eval queries would be served
/// with each retriever's candidates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineMetrics {
    /// The auction's settings (`[online]` of the run config).
    pub auction: AuctionConfig,
    /// Per retriever ("model", "popularity", "recently_seen", "random", "oracle").
    pub retrievers: BTreeMap<String, OnlineFigures>,
    /// Lifts in percent of every other retriever over [`LIFT_BASELINE`].
    pub lift_vs_popularity: BTreeMap<String, OnlineLift>,
    /// Per retriever, each served query's outcome in query order (what a paired bootstrap
    /// resamples); not part of `metrics.json`.
    #[serde(skip)]
    pub per_query: BTreeMap<String, Vec<ServingOutcome>>,
}

impl OnlineMetrics {
    /// The lifts of `retriever` over `base`, both of this run, if both were served.
    pub fn lift(&self, base: &str, retriever: &str) -> Option<OnlineLift> {
        let b = self.retrievers.get(base)?;
        let r = self.retrievers.get(retriever)?;
        Some(OnlineLift::between(&b.outcome, &r.outcome))
    }

    /// The results table's block for the eval queries: one row per retriever, then the model's
    /// lifts over popularity.
    pub fn table(&self) -> String {
        self.table_of("simulated serving: conversion queries'", "conv/1k q")
    }

    /// The same block for the simulated A/B on traffic.
    pub fn traffic_table(&self) -> String {
        let requests = self
            .retrievers
            .values()
            .next()
            .map_or(0, |f| f.outcome.queries);
        self.table_of(
            &format!("simulated A/B on {requests} traffic requests: each retriever's"),
            "conv/1k r",
        )
    }

    fn table_of(&self, what: &str, volume: &str) -> String {
        use std::fmt::Write as _;
        let a = &self.auction;
        let mut out = format!(
            "\n{what} top {} into an auction ({} slots, reserve {}, examination (1 + slot)^-{})\n",
            a.candidates, a.slots, a.reserve, a.position_decay
        );
        let _ = writeln!(
            out,
            "  {:<16}{:>9}{:>11}{:>10}{:>11}{:>11}{:>12}{:>12}{:>10}{:>8}",
            "retriever",
            "w/ ads",
            "impr.",
            "clicks",
            "conv.",
            "value",
            "cost",
            volume,
            "i2c %",
            "RoAS"
        );
        let order = ["model", "popularity", "recently_seen", "random", "oracle"];
        let names = order
            .iter()
            .map(|s| s.to_string())
            .filter(|n| self.retrievers.contains_key(n))
            .chain(
                self.retrievers
                    .keys()
                    .filter(|n| !order.contains(&n.as_str()))
                    .cloned(),
            );
        for name in names {
            let f = &self.retrievers[&name];
            let o = &f.outcome;
            let _ = writeln!(
                out,
                "  {:<16}{:>9}{:>11.2}{:>10.3}{:>11.4}{:>11.2}{:>12.2}{:>12.4}{:>10}{:>8}",
                name,
                o.queries_with_ads,
                o.impressions,
                o.clicks,
                o.conversions,
                o.value,
                o.cost,
                f.conversion_volume.unwrap_or(f64::NAN),
                opt(f.impression_to_conversion.map(|x| 100.0 * x), 4),
                opt(f.roas, 2),
            );
        }
        if let Some(lift) = self.lift_vs_popularity.get("model") {
            let _ = writeln!(out, "model vs {LIFT_BASELINE}: {}", lift.paper_style());
        }
        out
    }
}

/// `x` with `digits` decimals, or `-` when undefined.
fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// Serves each retriever's lists (`retrievers`: name and one top-K row per key of `keys`) through
/// the auction `cfg`, with the truth of `market`: the click probability on the key's surface, the
/// conversion probabilities after a click and after a view, the pin's expected conversion value
/// and its bid. Eval queries and lists index users and pins as the marketplace's log does.
///
/// # Errors
/// If the marketplace's catalog is not the lists' (a pin past its end), a key's user is unknown
/// to it, `cfg` is invalid, or the lists are shorter than `cfg.candidates`.
pub fn online_metrics(
    market: &Marketplace,
    keys: &[QueryKey],
    retrievers: &[(&str, &TopK)],
    cfg: &AuctionConfig,
) -> Result<OnlineMetrics> {
    let truth = &market.truth;
    if let Some(key) = keys.iter().find(|k| k.user as usize >= truth.num_users()) {
        bail!(
            "eval query of user index {} but the marketplace has {} users",
            key.user,
            truth.num_users()
        );
    }
    let mut out = OnlineMetrics {
        auction: cfg.clone(),
        ..OnlineMetrics::default()
    };
    for &(name, top) in retrievers {
        if top.num_queries() != keys.len() {
            bail!(
                "{name}: {} lists for {} eval queries",
                top.num_queries(),
                keys.len()
            );
        }
        if let Some(&pin) = top.ids().iter().find(|&&p| p as usize >= truth.num_pins()) {
            bail!(
                "{name} lists pin index {pin} but the marketplace has {} pins",
                truth.num_pins()
            );
        }
        let each = convcg_eval::serve_each_query(top, cfg, |q, pin| {
            let key = &keys[q];
            CandidateTruth {
                p_click: f64::from(truth.p_click(key.user, pin, key.surface)),
                p_conversion_given_click: f64::from(truth.p_conversion_given_click(key.user, pin)),
                p_view_through: f64::from(truth.p_view_through(key.user, pin)),
                value: f64::from(truth.conversion_value(pin)),
                bid: f64::from(truth.bid(pin)),
                target_cpa: truth.target_cpa(pin).map(f64::from),
            }
        })?;
        let mut outcome = ServingOutcome::default();
        for o in &each {
            outcome.add(o);
        }
        out.retrievers.insert(name.to_owned(), outcome.into());
        out.per_query.insert(name.to_owned(), each);
    }
    let others: Vec<String> = out
        .retrievers
        .keys()
        .filter(|n| n.as_str() != LIFT_BASELINE)
        .cloned()
        .collect();
    for name in others {
        if let Some(lift) = out.lift(LIFT_BASELINE, &name) {
            out.lift_vs_popularity.insert(name, lift);
        }
    }
    Ok(out)
}
