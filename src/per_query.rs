//! `per_query.json`: what a run's model measured on every eval query, written beside
//! `metrics.json`, so that two runs scored on the same queries can be compared with paired
//! bootstrap intervals (`convcg compare`, `convcg ablate`; [`crate::bootstrap`]).
//!
//! The file is one compact JSON object, column-wise (one array per figure, one entry per query
//! in eval-query order):
//!
//! ```text
//! { "format": "convcg-per-query/1", "retriever": "model",
//!   "surfaces": ["homefeed", "related", "search"],
//!   "conversion": { "queries": 3012, "identity": "9f0c…", "surface": [0, 2, …],
//!                   "relevant": [1, 3, …], "hits": { "@20": [0, 1, …], "@50": …, "@1000": … } },
//!   "engagement": { … },
//!   "online": { "ads_shown": [5, …], "impressions": […], "clicks": […], "conversions": […],
//!               "value": […], "cost": […] } }
//! ```
//!
//! `relevant` counts a query's distinct relevant pins and `hits["@K"]` those among the model's
//! first K, so recall@K of query q is `hits[q] / relevant[q]` exactly as `metrics.json` averages
//! it. `surface` codes each query's surface as its index in `surfaces`. `identity` is a hash of
//! the task's eval queries in order (each one's user, moment, surface, context pin, search query
//! and distinct relevant pins): two runs with the same identity were scored on the same queries
//! against the same labels, so their figures pair query by query. `online` (synthetic
//! marketplace only) holds the expected auction outcome of the model's conversion top K for each
//! conversion eval query, in the same order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use convcg_data::{QueryKey, Surface};
use convcg_eval::{ServingOutcome, TopK};

use crate::metrics::Metrics;
use crate::output::write_atomic;
use convcg_eval::{Bootstrap, BootstrapInterval, RatioParts};

/// The file of a run directory that holds its model's per-query figures.
pub const PER_QUERY_FILE: &str = "per_query.json";

/// The `format` of the files this convcg writes and reads.
pub const PER_QUERY_FORMAT: &str = "convcg-per-query/1";

/// The contents of `per_query.json` (see the module's documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerQuery {
    /// The version of this file's layout (`PER_QUERY_FORMAT`).
    pub format: String,
    /// The retriever measured: `model`.
    pub retriever: String,
    /// The surfaces' names, in the order [`QuerySet::surface`] codes them.
    pub surfaces: Vec<String>,
    /// The conversion task's eval queries.
    pub conversion: QuerySet,
    /// The engagement task's eval queries.
    pub engagement: QuerySet,
    /// The auction outcome of each conversion eval query (synthetic marketplace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<QueryOutcomes>,
    /// The auction outcome of each request of the simulated A/B on traffic (synthetic
    /// marketplace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficOutcomes>,
}

/// The model's auction outcome of each request of the simulated A/B on traffic, and the
/// identity of the requests (two runs with the same identity served the same requests).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficOutcomes {
    /// Requests served.
    pub requests: usize,
    /// Hash of the requests in order ([`query_identity`] without relevant pins).
    pub identity: String,
    /// One outcome per request.
    #[serde(flatten)]
    pub outcomes: QueryOutcomes,
}

impl TrafficOutcomes {
    /// The outcomes of the requests `keys`, in their order.
    pub fn new(keys: &[QueryKey], outcomes: QueryOutcomes) -> TrafficOutcomes {
        TrafficOutcomes {
            requests: keys.len(),
            identity: query_identity(keys, &vec![Vec::new(); keys.len()]),
            outcomes,
        }
    }
}

impl Default for PerQuery {
    fn default() -> Self {
        PerQuery {
            format: PER_QUERY_FORMAT.to_owned(),
            retriever: "model".to_owned(),
            surfaces: Surface::ALL.iter().map(|s| s.as_str().to_owned()).collect(),
            conversion: QuerySet::default(),
            engagement: QuerySet::default(),
            online: None,
            traffic: None,
        }
    }
}

/// One task's eval queries and the model's hits among them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QuerySet {
    /// Eval queries.
    pub queries: usize,
    /// 16 hex digits of FNV-1a over the queries in order.
    pub identity: String,
    /// Each query's surface, as its [`Surface::index`].
    pub surface: Vec<u8>,
    /// Each query's distinct relevant pins.
    pub relevant: Vec<u32>,
    /// `"@K"`: each query's distinct relevant pins among the model's first K.
    pub hits: BTreeMap<String, Vec<u32>>,
}

/// FNV-1a (64 bits) over the queries' keys and distinct relevant pins, in order, as 16 hex
/// digits: stable across builds and platforms.
pub fn query_identity(keys: &[QueryKey], relevant: &[Vec<u32>]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&(keys.len() as u64).to_le_bytes());
    for (q, key) in keys.iter().enumerate() {
        eat(&key.user.to_le_bytes());
        eat(&key.ts.to_le_bytes());
        eat(&key.seq.to_le_bytes());
        eat(&[key.surface.index() as u8]);
        match key.context_pin {
            Some(p) => {
                eat(&[1]);
                eat(&p.to_le_bytes());
            }
            None => eat(&[0]),
        }
        match key.query_id {
            Some(id) => {
                eat(&[1]);
                eat(&id.to_le_bytes());
            }
            None => eat(&[0]),
        }
        let rel = distinct(relevant.get(q).map_or(&[][..], Vec::as_slice));
        eat(&(rel.len() as u64).to_le_bytes());
        for p in rel {
            eat(&p.to_le_bytes());
        }
    }
    format!("{h:016x}")
}

fn distinct(pins: &[u32]) -> Vec<u32> {
    let mut v = pins.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}

impl QuerySet {
    /// The queries `keys` with their relevant pins, and the hits of `top` (one row per query) at
    /// every K of `ks` up to `top.k`.
    ///
    /// # Errors
    /// If `relevant` or `top` does not hold one entry per key.
    pub fn measure(
        keys: &[QueryKey],
        relevant: &[Vec<u32>],
        top: &TopK,
        ks: &[usize],
    ) -> Result<QuerySet> {
        if relevant.len() != keys.len() || top.num_queries() != keys.len() {
            bail!(
                "{} queries, {} relevant sets and {} lists",
                keys.len(),
                relevant.len(),
                top.num_queries()
            );
        }
        let ks: Vec<usize> = ks.iter().copied().filter(|&k| k <= top.k()).collect();
        let deepest = ks.iter().copied().max().unwrap_or(0);
        let mut hits: Vec<Vec<u32>> = vec![Vec::with_capacity(keys.len()); ks.len()];
        let mut counts = Vec::with_capacity(keys.len());
        for (q, rel) in relevant.iter().enumerate() {
            let rel = distinct(rel);
            // The rank of each relevant pin's first appearance in the list.
            let mut found = vec![false; rel.len()];
            let mut firsts = Vec::new();
            for (rank, pin) in top.row(q)[..deepest].iter().enumerate() {
                if let Ok(i) = rel.binary_search(pin)
                    && !found[i]
                {
                    found[i] = true;
                    firsts.push(rank);
                }
            }
            for (h, &k) in hits.iter_mut().zip(&ks) {
                h.push(firsts.iter().filter(|&&r| r < k).count() as u32);
            }
            counts.push(rel.len() as u32);
        }
        Ok(QuerySet {
            queries: keys.len(),
            identity: query_identity(keys, relevant),
            surface: keys.iter().map(|k| k.surface.index() as u8).collect(),
            relevant: counts,
            hits: ks.iter().map(|k| format!("@{k}")).zip(hits).collect(),
        })
    }

    /// Each query's recall@`k` (0 for a query without relevant pins), if the file has it.
    pub fn recall(&self, k: usize) -> Option<Vec<f64>> {
        let hits = self.hits.get(&format!("@{k}"))?;
        Some(
            hits.iter()
                .zip(&self.relevant)
                .map(|(&h, &r)| if r == 0 { 0.0 } else { h as f64 / r as f64 })
                .collect(),
        )
    }

    /// The K the file has hits for, ascending.
    pub fn ks(&self) -> Vec<usize> {
        let mut ks: Vec<usize> = self
            .hits
            .keys()
            .filter_map(|k| k.strip_prefix('@')?.parse().ok())
            .collect();
        ks.sort_unstable();
        ks
    }

    /// The queries of `surface`, by position.
    pub fn rows_of(&self, surface: Surface) -> Vec<usize> {
        let code = surface.index() as u8;
        (0..self.surface.len())
            .filter(|&q| self.surface[q] == code)
            .collect()
    }

    /// Checks that the columns hold one entry per query.
    fn check(&self, task: &str) -> Result<()> {
        let n = self.queries;
        if self.surface.len() != n
            || self.relevant.len() != n
            || self.hits.values().any(|h| h.len() != n)
        {
            bail!("the {task} columns do not all hold {n} queries");
        }
        Ok(())
    }
}

/// The model's auction outcome of each conversion eval query, column-wise
/// ([`convcg_eval::ServingOutcome`] of one query each).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryOutcomes {
    /// Ads shown.
    pub ads_shown: Vec<u32>,
    /// Expected impressions (examined ads).
    pub impressions: Vec<f64>,
    /// Expected clicks.
    pub clicks: Vec<f64>,
    /// Expected conversions.
    pub conversions: Vec<f64>,
    /// Expected conversion value.
    pub value: Vec<f64>,
    /// Expected advertiser cost.
    pub cost: Vec<f64>,
}

impl QueryOutcomes {
    /// The columns of `outcomes` (one per query, in query order).
    pub fn from_outcomes(outcomes: &[ServingOutcome]) -> QueryOutcomes {
        QueryOutcomes {
            ads_shown: outcomes.iter().map(|o| o.ads_shown as u32).collect(),
            impressions: outcomes.iter().map(|o| o.impressions).collect(),
            clicks: outcomes.iter().map(|o| o.clicks).collect(),
            conversions: outcomes.iter().map(|o| o.conversions).collect(),
            value: outcomes.iter().map(|o| o.value).collect(),
            cost: outcomes.iter().map(|o| o.cost).collect(),
        }
    }

    /// Queries served.
    pub fn len(&self) -> usize {
        self.conversions.len()
    }

    /// Whether no query was served.
    pub fn is_empty(&self) -> bool {
        self.conversions.is_empty()
    }

    /// The columns of several outcome sets over the same queries, query by query summed (the
    /// seeds of an ablation variant: a query's outcomes in every seed's run count together).
    ///
    /// # Errors
    /// If the sets differ in length or none is given.
    pub fn summed(sets: &[&QueryOutcomes]) -> Result<QueryOutcomes> {
        let Some(first) = sets.first() else {
            bail!("no outcomes to sum");
        };
        let n = first.len();
        if sets.iter().any(|s| s.len() != n) {
            bail!("outcomes of different query counts");
        }
        let add = |col: fn(&QueryOutcomes) -> &Vec<f64>| -> Vec<f64> {
            (0..n)
                .map(|q| sets.iter().map(|s| col(s)[q]).sum())
                .collect()
        };
        Ok(QueryOutcomes {
            ads_shown: (0..n)
                .map(|q| sets.iter().map(|s| s.ads_shown[q]).sum())
                .collect(),
            impressions: add(|s| &s.impressions),
            clicks: add(|s| &s.clicks),
            conversions: add(|s| &s.conversions),
            value: add(|s| &s.value),
            cost: add(|s| &s.cost),
        })
    }

    /// `self` followed by `other`'s queries.
    pub fn concat(&self, other: &QueryOutcomes) -> QueryOutcomes {
        let cat = |a: &[f64], b: &[f64]| a.iter().chain(b).copied().collect();
        QueryOutcomes {
            ads_shown: self
                .ads_shown
                .iter()
                .chain(&other.ads_shown)
                .copied()
                .collect(),
            impressions: cat(&self.impressions, &other.impressions),
            clicks: cat(&self.clicks, &other.clicks),
            conversions: cat(&self.conversions, &other.conversions),
            value: cat(&self.value, &other.value),
            cost: cat(&self.cost, &other.cost),
        }
    }

    fn check(&self) -> Result<()> {
        let n = self.len();
        if [
            self.ads_shown.len(),
            self.impressions.len(),
            self.clicks.len(),
            self.value.len(),
            self.cost.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            bail!("the online columns do not all hold {n} queries");
        }
        Ok(())
    }
}

/// Paired bootstrap intervals (in percent) of the three online lifts of one outcome set over
/// another on the same queries; `None` where a lift is undefined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnlineLiftIntervals {
    /// Conversion volume: `sum(conversions)` per query.
    pub conversion_volume: Option<BootstrapInterval>,
    /// Impression-to-conversion: `sum(conversions) / sum(impressions)`.
    pub impression_to_conversion: Option<BootstrapInterval>,
    /// Return on ad spend: `sum(value) / sum(cost)`.
    pub roas: Option<BootstrapInterval>,
}

impl OnlineLiftIntervals {
    /// The three lifts of `new` over `base` (the same queries in the same order), resampled
    /// jointly ([`Bootstrap::lifts`]).
    ///
    /// # Errors
    /// If the sets differ in length or are empty, or the bootstrap settings are invalid.
    pub fn between(
        base: &QueryOutcomes,
        new: &QueryOutcomes,
        bootstrap: &Bootstrap,
    ) -> Result<OnlineLiftIntervals> {
        // Conversion volume is conversions per query: each query adds 1 to the denominator.
        let (ones_base, ones_new) = (vec![1.0; base.len()], vec![1.0; new.len()]);
        fn part<'a>(num: &'a [f64], den: &'a [f64]) -> RatioParts<'a> {
            RatioParts { num, den }
        }
        let pairs = [
            (
                part(&base.conversions, &ones_base),
                part(&new.conversions, &ones_new),
            ),
            (
                part(&base.conversions, &base.impressions),
                part(&new.conversions, &new.impressions),
            ),
            (part(&base.value, &base.cost), part(&new.value, &new.cost)),
        ];
        let out = bootstrap.lifts(&pairs)?;
        Ok(OnlineLiftIntervals {
            conversion_volume: out[0],
            impression_to_conversion: out[1],
            roas: out[2],
        })
    }
}

/// Paired bootstrap intervals of `b - a` of recall@K at every K of `ks`, over the queries
/// `rows` (all when `None`) of two query sets with the same identity, resampled jointly; a K
/// either lacks is left out.
///
/// # Errors
/// If the sets differ in length, `rows` is empty or out of range, or the settings are invalid.
pub fn recall_intervals(
    a: &QuerySet,
    b: &QuerySet,
    rows: Option<&[usize]>,
    ks: &[usize],
    bootstrap: &Bootstrap,
) -> Result<BTreeMap<usize, BootstrapInterval>> {
    if a.queries != b.queries {
        bail!("{} and {} queries", a.queries, b.queries);
    }
    if rows.is_some_and(|r| r.iter().any(|&q| q >= a.queries)) {
        bail!("a query row past {}", a.queries);
    }
    let pick = |v: Vec<f64>| match rows {
        Some(rows) => rows.iter().map(|&q| v[q]).collect(),
        None => v,
    };
    let mut columns: Vec<(usize, Vec<f64>, Vec<f64>)> = Vec::new();
    for &k in ks {
        if let (Some(ra), Some(rb)) = (a.recall(k), b.recall(k)) {
            columns.push((k, pick(rb), pick(ra)));
        }
    }
    if columns.is_empty() {
        return Ok(BTreeMap::new());
    }
    let pairs: Vec<(&[f64], &[f64])> = columns
        .iter()
        .map(|(_, b, a)| (b.as_slice(), a.as_slice()))
        .collect();
    let out = bootstrap.mean_differences(&pairs)?;
    Ok(columns.iter().map(|(k, _, _)| *k).zip(out).collect())
}

impl PerQuery {
    /// Writes the file into `dir` atomically (compact JSON).
    ///
    /// # Errors
    /// If it cannot be serialised or written.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_atomic(&dir.join(PER_QUERY_FILE), &serde_json::to_vec(self)?)
    }

    /// The file beside `metrics_file` (a run's `metrics.json`): `Ok(None)` when there is none (a
    /// run by a convcg before this file), an error when it cannot be read, is not this format, or
    /// disagrees with the metrics (`metrics`: the queries counted, and the model's mean
    /// recall@100).
    ///
    /// # Errors
    /// As said; the message names the file.
    pub fn read_beside(metrics_file: &Path, metrics: &Metrics) -> Result<Option<PerQuery>> {
        let file = per_query_path(metrics_file);
        if !file.is_file() {
            return Ok(None);
        }
        let text =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let p: PerQuery = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not a convcg per_query.json", file.display()))?;
        if p.format != PER_QUERY_FORMAT {
            bail!(
                "{} is of format {:?}; this convcg reads {PER_QUERY_FORMAT:?}",
                file.display(),
                p.format
            );
        }
        let consistent = || -> Result<()> {
            p.conversion.check("conversion")?;
            p.engagement.check("engagement")?;
            if let Some(o) = &p.online {
                o.check()?;
                if o.len() != p.conversion.queries {
                    bail!(
                        "{} online outcomes for {} conversion queries",
                        o.len(),
                        p.conversion.queries
                    );
                }
            }
            for (task, set, n, recall) in [
                (
                    "conversion",
                    &p.conversion,
                    metrics.eval.conversion_queries,
                    &metrics.model.conversion,
                ),
                (
                    "engagement",
                    &p.engagement,
                    metrics.eval.engagement_queries,
                    &metrics.model.engagement,
                ),
            ] {
                if set.queries != n {
                    bail!(
                        "{} {task} queries, metrics.json {n}: they are not of the same run",
                        set.queries
                    );
                }
                if let (Some(per), Some(&mean)) = (set.recall(100), recall.get("recall@100")) {
                    let here = per.iter().sum::<f64>() / per.len().max(1) as f64;
                    if (here - mean).abs() > 1e-9 {
                        bail!(
                            "its {task} recall@100 averages {here:.6}, metrics.json says {mean:.6}: they are not of the same run"
                        );
                    }
                }
            }
            Ok(())
        };
        consistent()
            .with_context(|| format!("{} does not fit its metrics.json", file.display()))?;
        Ok(Some(p))
    }
}

/// `per_query.json` beside a run's `metrics.json`.
pub fn per_query_path(metrics_file: &Path) -> PathBuf {
    metrics_file
        .parent()
        .unwrap_or(Path::new("."))
        .join(PER_QUERY_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: u32, surface: Surface) -> QueryKey {
        QueryKey {
            user,
            ts: 100,
            seq: i64::MIN,
            surface,
            context_pin: None,
            query_id: None,
        }
    }

    #[test]
    fn hits_count_distinct_relevant_pins_and_give_the_recall_by_hand() {
        let keys = [key(0, Surface::HomeFeed), key(1, Surface::Search)];
        // Lists of 4: query 0 lists 7, 3, 7, 9; query 1 lists 1, 2, 3, 4.
        let top = TopK::new(4, vec![7, 3, 7, 9, 1, 2, 3, 4], vec![0.0; 8]).unwrap();
        let relevant = vec![vec![9, 7, 7], vec![5]];
        let set = QuerySet::measure(&keys, &relevant, &top, &[1, 2, 4, 8]).unwrap();
        assert_eq!(set.relevant, [2, 1]);
        assert_eq!(set.hits["@1"], [1, 0]);
        assert_eq!(set.hits["@2"], [1, 0]);
        assert_eq!(set.hits["@4"], [2, 0]);
        assert!(!set.hits.contains_key("@8"), "K above the lists' length");
        assert_eq!(set.ks(), [1, 2, 4]);
        assert_eq!(set.recall(1).unwrap(), [0.5, 0.0]);
        assert_eq!(set.recall(4).unwrap(), [1.0, 0.0]);
        assert_eq!(set.surface, [0, 2]);
        assert_eq!(set.rows_of(Surface::Search), [1]);
    }

    #[test]
    fn the_identity_changes_with_any_query_field_or_label_and_not_otherwise() {
        let keys = vec![key(0, Surface::HomeFeed), key(1, Surface::Related)];
        let rel = vec![vec![3, 1], vec![2]];
        let id = query_identity(&keys, &rel);
        assert_eq!(id.len(), 16);
        // Relevant pins are a set: order and repeats do not matter.
        assert_eq!(id, query_identity(&keys, &[vec![1, 3, 3], vec![2]]));
        let mut other = keys.clone();
        other[1].context_pin = Some(0);
        assert_ne!(id, query_identity(&other, &rel));
        other = keys.clone();
        other[0].ts += 1;
        assert_ne!(id, query_identity(&other, &rel));
        assert_ne!(id, query_identity(&keys, &[vec![3, 1], vec![4]]));
        assert_ne!(id, query_identity(&keys[..1], &rel[..1]));
        let swapped = vec![keys[1], keys[0]];
        assert_ne!(
            id,
            query_identity(&swapped, &[rel[1].clone(), rel[0].clone()])
        );
    }

    #[test]
    fn the_file_round_trips_and_outcome_columns_sum_and_concatenate() {
        let o = |c: f64| ServingOutcome {
            queries: 1,
            queries_with_ads: 1,
            ads_shown: 2,
            impressions: 1.5,
            clicks: 0.1,
            conversions: c,
            value: 2.0 * c,
            cost: 0.3,
        };
        let a = QueryOutcomes::from_outcomes(&[o(0.5), o(0.25)]);
        let sum = QueryOutcomes::summed(&[&a, &a]).unwrap();
        assert_eq!(sum.conversions, [1.0, 0.5]);
        assert_eq!(sum.ads_shown, [4, 4]);
        assert_eq!(a.concat(&a).conversions, [0.5, 0.25, 0.5, 0.25]);
        let p = PerQuery {
            online: Some(a),
            ..PerQuery::default()
        };
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.starts_with(r#"{"format":"convcg-per-query/1","retriever":"model""#));
        assert_eq!(serde_json::from_str::<PerQuery>(&json).unwrap(), p);
    }

    #[test]
    fn online_lift_intervals_of_a_set_against_itself_are_zero() {
        let outcomes: Vec<ServingOutcome> = (0..30)
            .map(|i| ServingOutcome {
                queries: 1,
                queries_with_ads: 1,
                ads_shown: 3,
                impressions: 1.0 + f64::from(i % 4),
                clicks: 0.1,
                conversions: 0.01 * f64::from(i % 5),
                value: 0.2 * f64::from(i % 3),
                cost: 0.5,
            })
            .collect();
        let o = QueryOutcomes::from_outcomes(&outcomes);
        let b = Bootstrap {
            resamples: 100,
            level: 0.95,
            seed: 1,
        };
        let ci = OnlineLiftIntervals::between(&o, &o, &b).unwrap();
        for x in [ci.conversion_volume, ci.impression_to_conversion, ci.roas] {
            let x = x.unwrap();
            assert_eq!((x.mean, x.low, x.high), (0.0, 0.0, 0.0));
        }
        // Doubling every conversion is +100% volume and i2c, exactly, in every resample.
        let mut double = o.clone();
        double.conversions.iter_mut().for_each(|c| *c *= 2.0);
        let ci = OnlineLiftIntervals::between(&o, &double, &b).unwrap();
        let v = ci.conversion_volume.unwrap();
        assert!((v.mean - 100.0).abs() < 1e-9 && (v.low - 100.0).abs() < 1e-9);
        assert_eq!(ci.roas.unwrap().mean, 0.0);
    }
}
