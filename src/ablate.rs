//! `convcg ablate`: a named ladder of model variants, each trained with several seeds on the
//! same data, and a table of what every change bought.
//!
//! The `pinterest` ladder retraces the history the source papers (Pinterest's shopping conversion
//! candidate generator) tell: an engagement-only retriever,
//! then one change at a time (conversion positives on a second head, click-duration weights,
//! hard negatives, a parallel body, a unified head, the advertiser-level loss) up to the full
//! model. The `cross` ladder compares the DCN v2 cross-layer kinds on the full model. The data
//! (the synthetic marketplace or a dataset directory) is made or read once; every run of a
//! variant differs only in its seed, which sets the initialisation and the batch order.
//!
//! Every variant but the first is also set against the first (the reference: engagement-only on
//! the `pinterest` ladder) query by query: the paired bootstrap 95% interval of its conversion
//! recall@100 delta and of its simulated online lifts ([`VersusReference`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use convcg_eval::{Bootstrap, BootstrapInterval};
use convcg_model::{CrossKind, Heads, Structure};

use crate::config::{ADVERTISER_RATE_PRIOR, RunConfig};
use crate::metrics::Metrics;
use crate::output::write_atomic;
use crate::per_query::{OnlineLiftIntervals, PerQuery, QueryOutcomes};
use crate::run::{TrainData, TrainRequest, Verbosity, generate, load};

/// The ladders `convcg ablate --ladder` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Ladder {
    /// The source papers' history, each step adding one change to the one before. `seeds`, its
    /// former name, is still accepted.
    #[value(alias = "seeds")]
    #[serde(alias = "seeds")]
    Pinterest,
    /// Full-rank, low-rank and mixture-of-experts cross layers, each on the full model.
    Cross,
}

/// One rung of a ladder: a name, what it changes, and the change.
#[derive(Clone, Copy)]
struct Rung {
    name: &'static str,
    change: &'static str,
    /// Applies the change to `cfg`, reading the values to restore from `full` (the user's
    /// configuration, i.e. the full model).
    apply: fn(cfg: &mut RunConfig, full: &RunConfig),
}

fn set_structure(cfg: &mut RunConfig, s: Structure) {
    cfg.model.query.structure = s;
    cfg.model.pin.structure = s;
}

fn set_cross(cfg: &mut RunConfig, kind: CrossKind) {
    cfg.model.query.cross_kind = kind;
    cfg.model.pin.cross_kind = kind;
}

/// The full model's setting `value` where it is on (positive), else `fallback`: a rung that adds
/// a change takes the full model's strength of it, or a default where the full model lacks it.
fn on_or(value: f32, fallback: f32) -> f32 {
    if value > 0.0 { value } else { fallback }
}

const PINTEREST_LADDER: [Rung; 9] = [
    Rung {
        name: "a_engagement_only",
        change: "engagement positives only, one head, stacked, in-batch negatives only, unweighted clicks, no advertiser loss",
        apply: |cfg, _| {
            cfg.data.conversion_weight = 0.0;
            cfg.data.advertiser_rate_prior = 0.0;
            cfg.data.click_weight.by_duration = false;
            cfg.data.hard_negatives_per_positive = 0;
            cfg.train.uniform_negatives = 0;
            cfg.model.heads = Heads::Unified;
            cfg.model.advertiser_loss_weight = 0.0;
            set_structure(cfg, Structure::Stacked);
        },
    },
    Rung {
        name: "b_conversion_head",
        change: "+ conversion positives on a second, conversion head (served from here on)",
        apply: |cfg, full| {
            cfg.data.conversion_weight = on_or(full.data.conversion_weight, 1.0);
            cfg.model.heads = Heads::PerTask;
        },
    },
    Rung {
        name: "c_click_duration",
        change: "+ click-duration weights",
        apply: |cfg, full| {
            cfg.data.click_weight = full.data.click_weight;
            cfg.data.click_weight.by_duration = true;
        },
    },
    Rung {
        name: "d_hard_negatives",
        change: "+ hard negatives",
        apply: |cfg, full| {
            cfg.data.hard_negatives_per_positive = full.data.hard_negatives_per_positive.max(1);
            cfg.train.uniform_negatives = full.train.uniform_negatives;
        },
    },
    Rung {
        name: "e_parallel",
        change: "stacked -> parallel DCN v2 + MLP",
        apply: |cfg, _| set_structure(cfg, Structure::Parallel),
    },
    Rung {
        name: "f_unified_head",
        change: "multi-head -> unified single head",
        apply: |cfg, _| cfg.model.heads = Heads::Unified,
    },
    Rung {
        name: "g_advertiser_loss",
        change: "+ advertiser-level loss",
        apply: |cfg, full| {
            cfg.model.advertiser_loss_weight = on_or(full.model.advertiser_loss_weight, 0.5);
        },
    },
    Rung {
        name: "h_advertiser_rate",
        change: "+ engagement positives weighed by their advertiser's conversion rate (this project's)",
        apply: |cfg, full| {
            cfg.data.advertiser_rate_prior =
                on_or(full.data.advertiser_rate_prior, ADVERTISER_RATE_PRIOR);
        },
    },
    Rung {
        name: "i_full_model",
        change: "hard negatives as the full model has them (none by default: they cost conversion recall here)",
        apply: |cfg, full| {
            cfg.data.hard_negatives_per_positive = full.data.hard_negatives_per_positive;
            cfg.train.uniform_negatives = full.train.uniform_negatives;
        },
    },
];

const CROSS_LADDER: [Rung; 3] = [
    Rung {
        name: "full_rank",
        change: "full model, full-rank cross layers",
        apply: |cfg, _| set_cross(cfg, CrossKind::Full),
    },
    Rung {
        name: "low_rank",
        change: "full model, low-rank cross layers (rank cross_rank)",
        apply: |cfg, _| set_cross(cfg, CrossKind::LowRank),
    },
    Rung {
        name: "mixture",
        change: "full model, a mixture of cross_experts low-rank experts per layer",
        apply: |cfg, _| set_cross(cfg, CrossKind::Mixture),
    },
];

impl Ladder {
    fn rungs(self) -> &'static [Rung] {
        match self {
            Ladder::Pinterest => &PINTEREST_LADDER,
            Ladder::Cross => &CROSS_LADDER,
        }
    }

    /// Whether each rung builds on the one before (else each starts from the full model).
    fn cumulative(self) -> bool {
        self == Ladder::Pinterest
    }

    /// The configuration of every rung, in order.
    fn configs(self, full: &RunConfig) -> Vec<(Rung, RunConfig)> {
        let mut cfg = full.clone();
        self.rungs()
            .iter()
            .map(|rung| {
                if !self.cumulative() {
                    cfg = full.clone();
                }
                (rung.apply)(&mut cfg, full);
                (*rung, cfg.clone())
            })
            .collect()
    }
}

/// The configuration `convcg ablate` starts from: `convcg train`'s default marketplace and full
/// model, with the engagement eval subsampled to 5,000 queries (`convcg train` keeps up to
/// 10,000) so that scoring them, the oracle's above all, does not dominate a ladder's many
/// runs; the conversion eval queries are all kept.
pub fn ablation_config() -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.data.max_eval_queries = 5_000;
    cfg
}

/// [`ablation_config`] with any subset of its keys overridden by the TOML `text`.
///
/// # Errors
/// If `text` is not TOML, or sets an unknown key or a value of the wrong type.
pub fn ablation_config_with(text: &str) -> Result<RunConfig> {
    ablation_config().overridden_by(text)
}

/// What `convcg ablate` runs.
#[derive(Clone, Debug)]
pub struct AblationRequest {
    /// The full model's configuration (the synthetic marketplace's, or the dataset's).
    pub config: RunConfig,
    /// A canonical-schema dataset directory, or none for the synthetic marketplace.
    pub data: Option<PathBuf>,
    /// Which ladder.
    pub ladder: Ladder,
    /// The seeds every variant runs with.
    pub seeds: Vec<u64>,
    /// Where `ablation.json`, `ablation.md` and every run's directory go.
    pub out: PathBuf,
}

/// Mean and spread of one metric over a variant's seeds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean over the seeds.
    pub mean: f64,
    /// Sample standard deviation over the seeds (0 for one seed).
    pub sd: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Spread {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = if values.len() > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        Spread {
            mean,
            sd: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// One variant's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VariantResult {
    /// Rung name, e.g. `d_hard_negatives`.
    pub name: String,
    /// What the rung changes.
    pub change: String,
    /// Every metric of every seed's run, by metric name, in seed order.
    pub runs: BTreeMap<String, Vec<f64>>,
    /// Mean and spread of each metric over the seeds.
    pub summary: BTreeMap<String, Spread>,
    /// The run directories, in seed order.
    pub run_dirs: Vec<PathBuf>,
    /// This variant against the ladder's first, query by query (absent for the first itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub versus_reference: Option<VersusReference>,
}

/// A variant against the ladder's first variant (the reference), pooled over the seeds: the
/// run of seed s of the variant is paired with the reference's run of seed s, query by query.
///
/// When every run was scored on the same eval queries (the same `per_query.json` identity; the
/// eval set does not depend on the run's seed), each query's figures are pooled over the seeds
/// (recall@100 averaged, auction outcomes summed) and the *queries* are resampled, so that a
/// query counts once however many seeds measured it. Otherwise the (seed, query) pairs of all
/// seeds are concatenated and resampled as one set. Either way the estimate of the recall delta
/// is the difference of the seeds' mean recall@100, and the conversion-volume lift is that of
/// all seeds' conversions together.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersusReference {
    /// The reference variant's name.
    pub reference: String,
    /// `queries` (each query's figures pooled over the seeds) or `seed_query_pairs`.
    pub pooling: String,
    /// Units resampled: queries, or (seed, query) pairs.
    pub units: usize,
    /// The paired bootstrap interval of conversion recall@100, this variant minus the reference.
    pub conversion_recall_at_100: Option<BootstrapInterval>,
    /// The same for every K the runs measured (`recall@K` keys), recall@100 included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conversion_recall: BTreeMap<String, BootstrapInterval>,
    /// The paired bootstrap intervals of the simulated online lifts over the reference, in
    /// percent (synthetic marketplace only).
    pub online_lifts: Option<OnlineLiftIntervals>,
    /// The paired bootstrap intervals of the lifts in the simulated A/B on traffic, over the
    /// requests, in percent (synthetic marketplace only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_lifts: Option<OnlineLiftIntervals>,
    /// Why an interval is missing, if one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `new`'s runs (one per seed, in seed order) against `base`'s, as [`VersusReference`] says.
fn versus_reference(reference: &str, base: &[PerQuery], new: &[PerQuery]) -> VersusReference {
    let mut out = VersusReference {
        reference: reference.to_owned(),
        pooling: String::new(),
        units: 0,
        conversion_recall_at_100: None,
        conversion_recall: BTreeMap::new(),
        online_lifts: None,
        traffic_lifts: None,
        note: None,
    };
    if base.is_empty() || base.len() != new.len() {
        out.note = Some(format!(
            "{} reference runs against {} runs of the variant",
            base.len(),
            new.len()
        ));
        return out;
    }
    if let Some(s) = (0..base.len()).find(|&s| {
        base[s].conversion.identity != new[s].conversion.identity
            || base[s].conversion.queries != new[s].conversion.queries
    }) {
        out.note = Some(format!(
            "the conversion eval queries of its run {} differ from the reference's: no query pairs",
            s + 1
        ));
        return out;
    }
    let same = base
        .iter()
        .all(|p| p.conversion.identity == base[0].conversion.identity);
    let seeds = base.len() as f64;
    let recall = |runs: &[PerQuery], k: usize| -> Option<Vec<f64>> {
        let per: Vec<Vec<f64>> = runs
            .iter()
            .map(|p| p.conversion.recall(k))
            .collect::<Option<_>>()?;
        Some(if same {
            (0..per[0].len())
                .map(|q| per.iter().map(|r| r[q]).sum::<f64>() / seeds)
                .collect()
        } else {
            per.concat()
        })
    };
    let pooled = |sets: Vec<&QueryOutcomes>, same: bool| -> Option<QueryOutcomes> {
        if same {
            QueryOutcomes::summed(&sets).ok()
        } else {
            Some(
                sets[1..]
                    .iter()
                    .fold(sets[0].clone(), |acc, s| acc.concat(s)),
            )
        }
    };
    let online = |runs: &[PerQuery]| -> Option<QueryOutcomes> {
        pooled(
            runs.iter()
                .map(|p| p.online.as_ref())
                .collect::<Option<_>>()?,
            same,
        )
    };
    // Traffic requests pair only where both runs served the same ones.
    let traffic_pairs = (0..base.len()).all(|s| {
        matches!((&base[s].traffic, &new[s].traffic), (Some(a), Some(b)) if a.identity == b.identity)
    });
    let traffic = |runs: &[PerQuery]| -> Option<QueryOutcomes> {
        let first = runs.first()?.traffic.as_ref()?.identity.clone();
        let same = runs
            .iter()
            .all(|p| p.traffic.as_ref().is_some_and(|t| t.identity == first));
        pooled(
            runs.iter()
                .map(|p| p.traffic.as_ref().map(|t| &t.outcomes))
                .collect::<Option<_>>()?,
            same,
        )
    };
    out.pooling = if same { "queries" } else { "seed_query_pairs" }.to_owned();
    let mut notes = Vec::new();
    for k in base[0].conversion.ks() {
        match (recall(base, k), recall(new, k)) {
            (Some(b), Some(n)) if !b.is_empty() => {
                out.units = b.len();
                match Bootstrap::default().mean_difference(&n, &b) {
                    Ok(ci) => {
                        out.conversion_recall.insert(format!("recall@{k}"), ci);
                    }
                    Err(e) => notes.push(format!("recall@{k}: {e}")),
                }
            }
            _ => notes.push(format!("no per-query conversion recall@{k}")),
        }
    }
    out.conversion_recall_at_100 = out.conversion_recall.get("recall@100").copied();
    if out.conversion_recall_at_100.is_none() && notes.is_empty() {
        notes.push("no per-query conversion recall@100".to_owned());
    }
    let mut lifts = |what: &str, b: Option<QueryOutcomes>, n: Option<QueryOutcomes>| {
        let (b, n) = (b.filter(|b| !b.is_empty())?, n?);
        OnlineLiftIntervals::between(&b, &n, &Bootstrap::default())
            .map_err(|e| notes.push(format!("{what}: {e}")))
            .ok()
    };
    out.online_lifts = lifts("online lifts", online(base), online(new));
    if traffic_pairs {
        out.traffic_lifts = lifts("traffic lifts", traffic(base), traffic(new));
    }
    if !notes.is_empty() {
        out.note = Some(notes.join("; "));
    }
    out
}

/// What `convcg ablate` measured: written as `ablation.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AblationReport {
    /// The ladder.
    pub ladder: Ladder,
    /// The data: `synthetic` or the dataset directory.
    pub data: String,
    /// The seeds.
    pub seeds: Vec<u64>,
    /// Conversion eval queries (the same for every variant).
    pub conversion_queries: usize,
    /// Wall-clock seconds of the whole ladder.
    pub seconds: f64,
    /// The variants, in ladder order.
    pub variants: Vec<VariantResult>,
    /// What no variant can beat on these eval queries (the synthetic marketplace only; the same
    /// for every run, taken from the first): `oracle_conversion_recall@K`, the policy-aware
    /// oracle's, and `oracle_clicks_conversion_recall@K`, the engagement-only ceiling.
    #[serde(default)]
    pub ceilings: BTreeMap<String, f64>,
}

/// The oracles' conversion recall at K = 100 and 1000 ([`AblationReport::ceilings`]).
fn ceilings(m: &Metrics) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (name, r) in [("oracle", &m.oracle), ("oracle_clicks", &m.oracle_clicks)] {
        let Some(r) = r else { continue };
        for k in [100, 1000] {
            if let Some(&v) = r.conversion.get(&format!("recall@{k}")) {
                out.insert(format!("{name}_conversion_recall@{k}"), v);
            }
        }
    }
    out
}

/// The columns of the table: metric key and header.
const COLUMNS: [(&str, &str); 8] = [
    ("conversion_recall@100", "conv R@100"),
    ("conversion_recall@1000", "conv R@1000"),
    ("engagement_recall@100", "eng R@100"),
    ("advertiser_recall@100", "adv R@100"),
    ("conversion_recall@100_homefeed", "conv R@100 homefeed"),
    ("conversion_recall@100_related", "conv R@100 related"),
    ("conversion_recall@100_search", "conv R@100 search"),
    ("conversion_clean_recall@100", "clean conv R@100"),
];

/// The table's metrics of one run; a metric the run lacks (no advertisers, no ground truth, a
/// surface without queries) is left out.
fn run_metrics(m: &Metrics) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut put = |key: &str, v: Option<f64>| {
        if let Some(v) = v {
            out.insert(key.to_owned(), v);
        }
    };
    put(
        "conversion_recall@100",
        m.model.conversion.get("recall@100").copied(),
    );
    put(
        "conversion_recall@1000",
        m.model.conversion.get("recall@1000").copied(),
    );
    put(
        "engagement_recall@100",
        m.model.engagement.get("recall@100").copied(),
    );
    put(
        "advertiser_recall@100",
        m.advertiser
            .get("model")
            .and_then(|t| t.conversion.get("recall@100").copied()),
    );
    if let Some(surfaces) = m.surfaces.get("model") {
        for (surface, s) in &surfaces.conversion {
            if s.queries > 0 {
                put(
                    &format!("conversion_recall@100_{surface}"),
                    s.recall.get("recall@100").copied(),
                );
            }
        }
    }
    put(
        "conversion_clean_recall@100",
        m.model
            .conversion_clean
            .as_ref()
            .and_then(|c| c.get("recall@100").copied()),
    );
    out
}

/// Runs every rung of the ladder with every seed and writes `ablation.json` and `ablation.md`
/// (atomically) into `req.out`, each run's `config.toml` and `metrics.json` under
/// `req.out/runs/RUNG/seed-S/`. Progress goes to stderr unless quiet.
///
/// # Errors
/// If no seed is given, the data cannot be made or read, or a run fails.
pub fn run_ablation(req: &AblationRequest, verbosity: Verbosity) -> Result<AblationReport> {
    if req.seeds.is_empty() {
        bail!("at least one seed is needed");
    }
    req.config.validate()?;
    let loud = verbosity == Verbosity::Normal;
    let t0 = Instant::now();
    let (log, market, data) = match &req.data {
        Some(dir) => {
            let (log, market, _) = load(dir, &req.config, loud)?;
            (log, market, dir.display().to_string())
        }
        None => {
            let market = generate(&req.config, loud)?;
            (market.log.clone(), Some(market), "synthetic".to_owned())
        }
    };
    let configs = req.ladder.configs(&req.config);
    let total = configs.len() * req.seeds.len();
    let mut variants = Vec::with_capacity(configs.len());
    let mut conversion_queries = 0;
    let mut ceiling = BTreeMap::new();
    // Every run's per-query figures, per variant in seed order: what the intervals pair.
    let mut per_query: Vec<Vec<PerQuery>> = Vec::with_capacity(configs.len());
    for (v, (rung, cfg)) in configs.iter().enumerate() {
        let mut runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut run_dirs = Vec::with_capacity(req.seeds.len());
        let mut queries = Vec::with_capacity(req.seeds.len());
        for (s, &seed) in req.seeds.iter().enumerate() {
            let cfg = RunConfig {
                seed,
                ..cfg.clone()
            };
            let dir = req
                .out
                .join("runs")
                .join(rung.name)
                .join(format!("seed-{seed}"));
            let started = Instant::now();
            let out = TrainRequest::new(
                &cfg,
                TrainData::Loaded {
                    log: &log,
                    market: market.as_ref(),
                },
                &dir,
            )
            .run()
            .with_context(|| format!("ablation run {} with seed {seed}", rung.name))?;
            conversion_queries = out.metrics.eval.conversion_queries;
            if ceiling.is_empty() {
                ceiling = ceilings(&out.metrics);
            }
            let metrics = run_metrics(&out.metrics);
            if loud {
                let r = metrics.get("conversion_recall@100").copied();
                eprintln!(
                    "[{}/{total}] {} seed {seed}: conversion recall@100 {} ({:.0} s)",
                    v * req.seeds.len() + s + 1,
                    rung.name,
                    r.map_or("-".into(), |r| format!("{r:.4}")),
                    started.elapsed().as_secs_f64()
                );
            }
            for (k, x) in metrics {
                runs.entry(k).or_default().push(x);
            }
            run_dirs.push(dir);
            queries.push(out.model_queries);
        }
        let versus = per_query
            .first()
            .map(|base| versus_reference(configs[0].0.name, base, &queries));
        per_query.push(queries);
        // A metric counts only if every seed's run has it.
        runs.retain(|_, xs| xs.len() == req.seeds.len());
        let summary = runs
            .iter()
            .map(|(k, xs)| (k.clone(), Spread::of(xs)))
            .collect();
        variants.push(VariantResult {
            name: rung.name.to_owned(),
            change: rung.change.to_owned(),
            runs,
            summary,
            run_dirs,
            versus_reference: versus,
        });
    }
    let report = AblationReport {
        ladder: req.ladder,
        data,
        seeds: req.seeds.clone(),
        conversion_queries,
        seconds: t0.elapsed().as_secs_f64(),
        variants,
        ceilings: ceiling,
    };
    std::fs::create_dir_all(&req.out)
        .with_context(|| format!("cannot create {}", req.out.display()))?;
    write_atomic(
        &req.out.join("ablation.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    write_atomic(&req.out.join("ablation.md"), report.table().as_bytes())?;
    Ok(report)
}

impl AblationReport {
    /// The results as a markdown table: one row per variant, each metric as `mean ± sd`, the
    /// change in conversion recall@100 from the row before (cumulative ladders) or from the
    /// first row, and, against the first row, the conversion recall@100 delta and the
    /// conversion-volume lift with their paired bootstrap intervals (`(n.s.)` where the interval
    /// holds 0).
    pub fn table(&self) -> String {
        let present: Vec<(&str, &str)> = COLUMNS
            .iter()
            .copied()
            .filter(|(k, _)| self.variants.iter().any(|v| v.summary.contains_key(*k)))
            .collect();
        let mut s = format!(
            "Ladder `{:?}` on {} ({} seeds: {:?}; {} conversion eval queries; {:.0} s)\n\n",
            self.ladder,
            self.data,
            self.seeds.len(),
            self.seeds,
            self.conversion_queries,
            self.seconds
        );
        s.push_str("| variant | change |");
        for (_, header) in &present {
            s.push_str(&format!(" {header} |"));
        }
        s.push_str(" Δ conv R@100 |");
        let first = self
            .variants
            .iter()
            .find_map(|v| v.versus_reference.as_ref())
            .map(|r| r.reference.clone());
        let pct = 100.0 * Bootstrap::default().level;
        if let Some(r) = &first {
            s.push_str(&format!(
                " Δ conv R@100 vs {r} [{pct:.0}%] | conv volume vs {r} [{pct:.0}%] | traffic conv volume vs {r} [{pct:.0}%] |"
            ));
        }
        s.push_str("\n|---|---|");
        let extra = if first.is_some() { 3 } else { 0 };
        s.push_str(&"---:|".repeat(present.len() + 1 + extra));
        s.push('\n');
        let key = "conversion_recall@100";
        for (i, v) in self.variants.iter().enumerate() {
            s.push_str(&format!("| {} | {} |", v.name, v.change));
            for (k, _) in &present {
                match v.summary.get(*k) {
                    Some(x) => s.push_str(&format!(" {:.4} ± {:.4} |", x.mean, x.sd)),
                    None => s.push_str(" - |"),
                }
            }
            let reference = match (i, self.ladder == Ladder::Pinterest) {
                (0, _) => None,
                (_, true) => self.variants.get(i - 1),
                (_, false) => self.variants.first(),
            };
            let delta =
                reference.and_then(|r| Some(v.summary.get(key)?.mean - r.summary.get(key)?.mean));
            match delta {
                Some(d) => s.push_str(&format!(" {d:+.4} |")),
                None => s.push_str(" |"),
            }
            if first.is_some() {
                let volume = |lifts: Option<OnlineLiftIntervals>| {
                    lifts
                        .and_then(|o| o.conversion_volume)
                        .map_or("-".to_owned(), |ci| {
                            format!("{:+.1}% {}", ci.mean, ci.bracket(1, "%"))
                        })
                };
                let cells = match &v.versus_reference {
                    Some(r) => [
                        r.conversion_recall_at_100.map_or("-".to_owned(), |ci| {
                            format!("{:+.4} {}", ci.mean, ci.bracket(4, ""))
                        }),
                        volume(r.online_lifts),
                        volume(r.traffic_lifts),
                    ],
                    None if i == 0 => [
                        "reference".to_owned(),
                        "reference".to_owned(),
                        "reference".to_owned(),
                    ],
                    None => ["-".to_owned(), "-".to_owned(), "-".to_owned()],
                };
                s.push_str(&format!(" {} | {} | {} |", cells[0], cells[1], cells[2]));
            }
            s.push('\n');
        }
        if let Some(r) = &first {
            let pooling = self
                .variants
                .iter()
                .filter_map(|v| v.versus_reference.as_ref())
                .find(|v| !v.pooling.is_empty());
            let how = match pooling.map(|p| (p.pooling.as_str(), p.units)) {
                Some(("queries", n)) => format!(
                    "over the {n} conversion eval queries, each query's figures pooled over the seeds (recall averaged, conversions summed)"
                ),
                Some((_, n)) => format!(
                    "over the {n} (seed, query) pairs of all seeds' conversion eval queries"
                ),
                None => "over the conversion eval queries".to_owned(),
            };
            s.push_str(&format!(
                "\nIntervals against {r}: paired bootstrap {how}, {} resamples, \
                 {pct:.0}% percentile; (n.s.): the interval holds 0, the difference is not a result. \
                 conv volume: the simulated serving's conversions on the eval queries and on the \
                 traffic requests (synthetic marketplace only).\n",
                Bootstrap::default().resamples
            ));
            for v in &self.variants {
                let Some(r) = v.versus_reference.as_ref() else {
                    continue;
                };
                if !r.conversion_recall.is_empty() {
                    let mut ks: Vec<(usize, &BootstrapInterval)> = r
                        .conversion_recall
                        .iter()
                        .filter_map(|(key, ci)| {
                            Some((key.strip_prefix("recall@")?.parse().ok()?, ci))
                        })
                        .collect();
                    ks.sort_unstable_by_key(|(k, _)| *k);
                    let cells: Vec<String> = ks
                        .iter()
                        .map(|(k, ci)| format!("@{k} {:+.4} {}", ci.mean, ci.bracket(4, "")))
                        .collect();
                    s.push_str(&format!(
                        "{}: Δ conv recall vs {r}: {}\n",
                        v.name,
                        cells.join(", "),
                        r = r.reference
                    ));
                }
                if let Some(note) = &r.note {
                    s.push_str(&format!("{}: no interval: {note}\n", v.name));
                }
            }
        }
        let c = |k: &str| self.ceilings.get(k).copied();
        if let (Some(o100), Some(c100)) = (
            c("oracle_conversion_recall@100"),
            c("oracle_clicks_conversion_recall@100"),
        ) {
            s.push_str(&format!(
                "\nCeilings on these queries: the policy-aware oracle's conv R@100 {o100:.4}, the \
                 oracle of clicks' (what engagement alone can reach) {c100:.4}: conversion labels \
                 can add at most {:+.4} ({:+.1}%).",
                o100 - c100,
                100.0 * (o100 / c100 - 1.0)
            ));
            if let (Some(o), Some(c)) = (
                c("oracle_conversion_recall@1000"),
                c("oracle_clicks_conversion_recall@1000"),
            ) {
                s.push_str(&format!(" At K = 1000: {o:.4} and {c:.4}."));
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RetrieverMetrics;

    #[test]
    fn the_seeds_ladder_changes_one_thing_per_rung_and_ends_at_the_full_model() {
        let full = RunConfig::default();
        let configs = Ladder::Pinterest.configs(&full);
        assert_eq!(configs.len(), 9);
        let (_, a) = &configs[0];
        assert_eq!(a.data.conversion_weight, 0.0);
        assert_eq!(a.data.hard_negatives_per_positive, 0);
        assert_eq!(a.model.heads, Heads::Unified);
        assert_eq!(a.model.query.structure, Structure::Stacked);
        assert_eq!(a.model.advertiser_loss_weight, 0.0);
        assert_eq!(a.data.advertiser_rate_prior, 0.0);
        assert!(!a.data.click_weight.by_duration);
        // Each later rung differs from the one before in its own setting only.
        let (_, b) = &configs[1];
        assert_eq!(b.model.heads, Heads::PerTask);
        assert_eq!(b.data.conversion_weight, full.data.conversion_weight);
        assert_eq!(b.data.hard_negatives_per_positive, 0);
        let (_, f) = &configs[5];
        assert_eq!(f.model.heads, Heads::Unified);
        assert_eq!(f.model.query.structure, Structure::Parallel);
        let (_, d) = &configs[3];
        assert_eq!(d.data.hard_negatives_per_positive, 1);
        let (_, h) = &configs[7];
        assert_eq!(
            h.data.advertiser_rate_prior,
            full.data.advertiser_rate_prior
        );
        assert_eq!(h.data.hard_negatives_per_positive, 1);
        // The last rung is the default (full) model.
        let (_, i) = &configs[8];
        assert_eq!(i, &full);
    }

    /// docs/results.md trains rung (a) alone with `convcg train --config
    /// configs/engagement_only.toml`: that file must stay the ladder's rung (a).
    #[test]
    fn the_checked_in_engagement_only_config_is_rung_a() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/engagement_only.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let from_file = RunConfig::default().overridden_by(&text).unwrap();
        let (_, a) = &Ladder::Pinterest.configs(&RunConfig::default())[0];
        assert_eq!(&from_file, a);
    }

    /// Every checked-in configuration parses.
    #[test]
    fn the_checked_in_configs_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                RunConfig::default()
                    .overridden_by(&text)
                    .unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "{seen} configs");
    }

    #[test]
    fn the_cross_ladder_starts_each_rung_from_the_full_model() {
        let full = RunConfig::default();
        let configs = Ladder::Cross.configs(&full);
        let kinds: Vec<CrossKind> = configs
            .iter()
            .map(|(_, c)| c.model.pin.cross_kind)
            .collect();
        assert_eq!(
            kinds,
            [CrossKind::Full, CrossKind::LowRank, CrossKind::Mixture]
        );
        assert_eq!(configs[0].1, full);
    }

    /// A run's per-query figures: conversion queries with one relevant pin each, found in the
    /// top 100 where `hit` is 1, and `conversions` per query in the auction.
    fn run_queries(identity: &str, hit: &[u32], conversions: &[f64]) -> PerQuery {
        let n = hit.len();
        let mut p = PerQuery::default();
        p.conversion.queries = n;
        p.conversion.identity = identity.to_owned();
        p.conversion.surface = vec![0; n];
        p.conversion.relevant = vec![1; n];
        p.conversion.hits.insert("@100".to_owned(), hit.to_vec());
        p.conversion.hits.insert("@20".to_owned(), hit.to_vec());
        let outcomes = QueryOutcomes {
            ads_shown: vec![1; n],
            impressions: vec![1.0; n],
            clicks: vec![0.1; n],
            conversions: conversions.to_vec(),
            value: conversions.to_vec(),
            cost: vec![1.0; n],
        };
        // The same numbers as traffic requests of their own identity.
        p.traffic = Some(crate::per_query::TrafficOutcomes {
            requests: n,
            identity: "traffic".to_owned(),
            outcomes: outcomes.clone(),
        });
        p.online = Some(outcomes);
        p
    }

    #[test]
    fn a_variant_is_paired_with_the_reference_query_by_query_over_the_seeds() {
        // Two seeds on the same 40 queries. The reference finds queries 0..10 in both seeds;
        // the variant finds 0..20 in seed 1 and 0..30 in seed 2: +0.375 recall@100 on average.
        let hits = |found: usize| -> Vec<u32> { (0..40).map(|q| u32::from(q < found)).collect() };
        let conv = |c: f64| vec![c; 40];
        let base = [
            run_queries("q", &hits(10), &conv(1.0)),
            run_queries("q", &hits(10), &conv(1.0)),
        ];
        let new = [
            run_queries("q", &hits(20), &conv(1.5)),
            run_queries("q", &hits(30), &conv(1.5)),
        ];
        let v = versus_reference("a", &base, &new);
        assert_eq!(
            (v.pooling.as_str(), v.units, v.note.as_deref()),
            ("queries", 40, None)
        );
        let r = v.conversion_recall_at_100.unwrap();
        // Every K the runs measured gets its interval.
        let keys: Vec<&str> = v.conversion_recall.keys().map(String::as_str).collect();
        assert_eq!(keys, ["recall@100", "recall@20"]);
        assert_eq!(v.conversion_recall["recall@20"], r);
        assert!((r.mean - 0.375).abs() < 1e-12, "{r:?}");
        assert!(r.low > 0.0 && r.high <= 1.0, "{r:?}");
        let lift = v.online_lifts.unwrap().conversion_volume.unwrap();
        assert!((lift.mean - 50.0).abs() < 1e-9 && (lift.low - 50.0).abs() < 1e-9);
        let traffic = v.traffic_lifts.unwrap().conversion_volume.unwrap();
        assert!((traffic.mean - 50.0).abs() < 1e-9, "{traffic:?}");
        // Runs that served different traffic requests give no traffic interval.
        let mut other = new.clone();
        for p in &mut other {
            p.traffic.as_mut().unwrap().identity = "elsewhere".to_owned();
        }
        assert!(versus_reference("a", &base, &other).traffic_lifts.is_none());

        // Different eval queries per seed (paired within each seed): (seed, query) pairs.
        let base2 = [base[0].clone(), run_queries("other", &hits(10), &conv(1.0))];
        let new2 = [new[0].clone(), run_queries("other", &hits(30), &conv(1.5))];
        let v = versus_reference("a", &base2, &new2);
        assert_eq!((v.pooling.as_str(), v.units), ("seed_query_pairs", 80));
        assert!((v.conversion_recall_at_100.unwrap().mean - 0.375).abs() < 1e-12);

        // A variant scored on other queries than the reference pairs nothing.
        let v = versus_reference("a", &base, &new2);
        assert!(v.conversion_recall_at_100.is_none() && v.online_lifts.is_none());
        assert!(v.note.unwrap().contains("run 2 differ"));

        // The table: the reference row, the variant's delta with its interval, (n.s.) for a
        // variant no different from the reference, and how the intervals were drawn.
        let variant = |name: &str, versus: Option<VersusReference>| VariantResult {
            name: name.to_owned(),
            change: "x".to_owned(),
            runs: BTreeMap::new(),
            summary: BTreeMap::new(),
            run_dirs: Vec::new(),
            versus_reference: versus,
        };
        let report = AblationReport {
            ladder: Ladder::Pinterest,
            data: "synthetic".into(),
            seeds: vec![1, 2],
            conversion_queries: 40,
            seconds: 1.0,
            variants: vec![
                variant("a", None),
                variant("b", Some(versus_reference("a", &base, &new))),
                variant("c", Some(versus_reference("a", &base, &base))),
            ],
            ceilings: BTreeMap::new(),
        };
        let table = report.table();
        assert!(
            table.contains("| Δ conv R@100 vs a [95%] | conv volume vs a [95%] |"),
            "{table}"
        );
        assert!(
            table.contains("| a | x | | reference | reference |"),
            "{table}"
        );
        assert!(table.contains("| b | x | | +0.3750 ["), "{table}");
        assert!(table.contains("| +50.0% [+50.0%, +50.0%] |"), "{table}");
        assert!(
            table.contains(
                "| c | x | | +0.0000 [+0.0000, +0.0000] (n.s.) | +0.0% [+0.0%, +0.0%] (n.s.) |"
            ),
            "{table}"
        );
        assert!(
            table.contains("over the 40 conversion eval queries"),
            "{table}"
        );
        let json = serde_json::to_string(&report).unwrap();
        let back: AblationReport = serde_json::from_str(&json).unwrap();
        assert_eq!(
            back.variants[1].versus_reference,
            report.variants[1].versus_reference
        );
    }

    #[test]
    fn spread_is_mean_sample_sd_and_range() {
        let s = Spread::of(&[1.0, 2.0, 4.0]);
        assert!((s.mean - 7.0 / 3.0).abs() < 1e-12);
        let var = ((1.0f64 - 7.0 / 3.0).powi(2)
            + (2.0f64 - 7.0 / 3.0).powi(2)
            + (4.0f64 - 7.0 / 3.0).powi(2))
            / 2.0;
        assert!((s.sd - var.sqrt()).abs() < 1e-12);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert_eq!(Spread::of(&[3.0]).sd, 0.0);
    }

    #[test]
    fn ceilings_come_from_the_oracles_and_the_table_states_the_headroom() {
        let recall = |r100: f64, r1000: f64| {
            BTreeMap::from([
                ("recall@100".to_owned(), r100),
                ("recall@1000".to_owned(), r1000),
            ])
        };
        let mut m = Metrics::default();
        assert!(ceilings(&m).is_empty(), "no ground truth, no ceilings");
        m.oracle = Some(RetrieverMetrics {
            conversion: recall(0.8, 0.98),
            ..RetrieverMetrics::default()
        });
        m.oracle_clicks = Some(RetrieverMetrics {
            conversion: recall(0.64, 0.97),
            ..RetrieverMetrics::default()
        });
        let c = ceilings(&m);
        assert_eq!(c.len(), 4);
        assert_eq!(c["oracle_conversion_recall@100"], 0.8);
        assert_eq!(c["oracle_clicks_conversion_recall@1000"], 0.97);
        let report = AblationReport {
            ladder: Ladder::Pinterest,
            data: "synthetic".into(),
            seeds: vec![1],
            conversion_queries: 10,
            seconds: 1.0,
            variants: Vec::new(),
            ceilings: c,
        };
        let table = report.table();
        assert!(
            table.contains("oracle's conv R@100 0.8000")
                && table.contains("0.6400")
                && table.contains("+0.1600 (+25.0%)")
                && table.contains("At K = 1000: 0.9800 and 0.9700."),
            "{table}"
        );
        let without = AblationReport {
            ceilings: BTreeMap::new(),
            ..report
        };
        assert!(!without.table().contains("Ceilings"));
    }
}
