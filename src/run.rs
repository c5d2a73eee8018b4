//! One training run end to end: an event log (the synthetic marketplace, or a canonical-schema
//! directory), examples, training, evaluation, outputs. Both sources share everything after the
//! log is in hand.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use convcg_data::io::{ReadOptions, ReadReport, read_log};
use convcg_data::{
    Dataset, EvalQueries, EventLog, Marketplace, PinFeatures, QueryFeatures, QueryKey, Surface,
    Task, uniform_log_q, uniform_negatives,
};
use convcg_eval::{
    AuctionConfig, RECALL_KS, TopK, exact_top_k, popularity_top_k, random_top_k, recall_at_k,
    top_k_by,
};
use convcg_kernels::Par;
use convcg_model::{
    Error as ModelError, FeatureTables, Optimizer, TableDef, Tape, TaskRows, TowerInput,
    TrainBatch, TwoTowerModel,
};

use crate::config::{OnNonFinite, RunConfig};
use crate::metrics::{
    EvalSummary, LossPoint, Metrics, QueryRecalls, RetrieverMetrics, TrainingSummary, coverage_of,
    flatten, ranking_metrics,
};
use crate::output::write_atomic;
use crate::synth::{MANIFEST_FILE, SynthManifest};

/// Whether a run draws progress bars and prints its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verbosity {
    /// Progress bars on stderr, tables on stdout.
    Normal,
    /// Nothing printed (tests, library use).
    Quiet,
}

/// Rows per chunk when embedding the corpus and the eval queries.
const EMBED_CHUNK: usize = 4096;

/// Where a run's event log comes from.
#[derive(Clone, Copy, Debug)]
enum LogSource<'a> {
    /// The synthetic marketplace of the run config's `[synth]`.
    Synthetic,
    /// A canonical-schema directory, read with `read_log`.
    Directory(&'a Path),
    /// A log already in memory, with its marketplace when it is synthetic.
    Loaded(&'a EventLog, Option<&'a Marketplace>),
}

/// What a run produced: its metrics (as written to `metrics.json`), every eval query's recall
/// per retriever (for paired comparisons), and, for a run on a directory, what was read.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The metrics written to `metrics.json`.
    pub metrics: Metrics,
    /// Per eval query recall@K of every retriever.
    pub per_query: QueryRecalls,
    /// The reader's report (rows read and skipped per table) of a run on a directory.
    pub read_report: Option<ReadReport>,
}

/// Trains and evaluates on the synthetic marketplace `cfg.synth`; writes `config.toml` and
/// `metrics.json` into `out_dir` (created if missing) and returns the metrics.
pub fn train(cfg: &RunConfig, out_dir: &Path, verbosity: Verbosity) -> Result<Metrics> {
    Ok(execute(cfg, LogSource::Synthetic, out_dir, verbosity)?.metrics)
}

/// Trains and evaluates on the canonical-schema event log in `data_dir` (read with
/// `cfg.data.on_bad_row`; skipped rows are counted in the returned report and printed unless
/// quiet). If the directory holds `synth.toml` (written by `convcg synth`), the marketplace is
/// regenerated from it so that the clean-label and oracle metrics use its ground truth, as in
/// [`train`]; otherwise they are absent, as for any real log. Writes `config.toml` (`cfg`, see
/// [`RunConfig::for_dataset_dir`] for how a dataset's own settings get into it) and
/// `metrics.json` into `out_dir`.
///
/// # Errors
/// If the log cannot be read (the error names the file, row and column), `synth.toml` does not
/// describe the tables beside it, or training or evaluation fails.
pub fn train_data(
    data_dir: &Path,
    cfg: &RunConfig,
    out_dir: &Path,
    verbosity: Verbosity,
) -> Result<RunOutput> {
    execute(cfg, LogSource::Directory(data_dir), out_dir, verbosity)
}

/// Trains and evaluates on an event log already in memory (with its marketplace, for the
/// clean-label, oracle and simulated metrics, when it is synthetic); writes `config.toml` and
/// `metrics.json` into `out_dir`. Several runs on the same data (`convcg ablate`) read or
/// generate it once.
///
/// # Errors
/// If training or evaluation fails, or the outputs cannot be written.
pub fn train_loaded(
    log: &EventLog,
    market: Option<&Marketplace>,
    cfg: &RunConfig,
    out_dir: &Path,
    verbosity: Verbosity,
) -> Result<RunOutput> {
    execute(cfg, LogSource::Loaded(log, market), out_dir, verbosity)
}

fn execute(
    cfg: &RunConfig,
    source: LogSource<'_>,
    out_dir: &Path,
    verbosity: Verbosity,
) -> Result<RunOutput> {
    cfg.validate()?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the run directory {}", out_dir.display()))?;
    write_atomic(&out_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    let threads = cfg.resolved_threads();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the worker threads")?;
    let par = if threads > 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    let output = pool.install(|| run(cfg, source, par, verbosity))?;
    write_atomic(
        &out_dir.join("metrics.json"),
        serde_json::to_string_pretty(&output.metrics)?.as_bytes(),
    )?;
    Ok(output)
}

fn say(loud: bool, s: String) {
    if loud {
        eprintln!("{s}");
    }
}

pub(crate) fn generate(cfg: &RunConfig, loud: bool) -> Result<Marketplace> {
    let t0 = Instant::now();
    let bar = progress(loud, 1, "generating marketplace");
    let market = Marketplace::generate(&cfg.synth, cfg.seed, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .context("cannot generate the synthetic marketplace")?;
    bar.finish_and_clear();
    say(
        loud,
        format!(
            "marketplace generated in {:.1} s",
            t0.elapsed().as_secs_f64()
        ),
    );
    if loud {
        println!("{}", market.realised());
    }
    Ok(market)
}

/// The log in `dir` and, where `synth.toml` says it was generated, its marketplace.
pub(crate) fn load(
    dir: &Path,
    cfg: &RunConfig,
    loud: bool,
) -> Result<(EventLog, Option<Marketplace>, ReadReport)> {
    let t0 = Instant::now();
    let spinner = spinner(loud, "reading the event log");
    let opts = ReadOptions {
        on_bad_row: cfg.data.on_bad_row,
        ..ReadOptions::default()
    };
    let (log, report) = read_log(dir, &opts)
        .with_context(|| format!("cannot read the event log in {}", dir.display()))?;
    spinner.finish_and_clear();
    say(
        loud,
        format!("event log read in {:.1} s", t0.elapsed().as_secs_f64()),
    );
    if loud {
        println!("{report}");
    }
    let market = if dir.join(MANIFEST_FILE).is_file() {
        let market = SynthManifest::read(dir)?.regenerate()?;
        let sizes = |l: &EventLog| (l.pins.len(), l.users.len(), l.impressions.len());
        if sizes(&market.log) != sizes(&log) {
            bail!(
                "{} regenerates a marketplace of (pins, users, impressions) = {:?}, but the tables hold {:?}",
                dir.join(MANIFEST_FILE).display(),
                sizes(&market.log),
                sizes(&log)
            );
        }
        Some(market)
    } else {
        None
    };
    Ok((log, market, report))
}

fn run(
    cfg: &RunConfig,
    source: LogSource<'_>,
    par: Par,
    verbosity: Verbosity,
) -> Result<RunOutput> {
    let loud = verbosity == Verbosity::Normal;
    match source {
        LogSource::Synthetic => {
            let market = generate(cfg, loud)?;
            train_and_evaluate(cfg, &market.log, Some(&market), par, loud)
        }
        LogSource::Directory(dir) => {
            let (log, market, report) = load(dir, cfg, loud)?;
            let mut out = train_and_evaluate(cfg, &log, market.as_ref(), par, loud)?;
            let skipped = report.skipped.total();
            if loud && skipped > 0 {
                println!("{skipped} bad rows skipped while reading (on_bad_row = \"skip\")");
            }
            out.read_report = Some(report);
            Ok(out)
        }
        LogSource::Loaded(log, market) => train_and_evaluate(cfg, log, market, par, loud),
    }
}

/// Everything after the log is in hand: examples, training, evaluation, the results table.
fn train_and_evaluate(
    cfg: &RunConfig,
    log: &EventLog,
    market: Option<&Marketplace>,
    par: Par,
    loud: bool,
) -> Result<RunOutput> {
    let t0 = Instant::now();
    let truths = market.map(|m| m.true_conversions.as_slice());
    let data = Dataset::build(log, truths, &cfg.data).context("cannot build training examples")?;
    say(
        loud,
        format!("examples built in {:.1} s", t0.elapsed().as_secs_f64()),
    );
    if loud {
        println!("{}", data.stats());
    }

    let (query_tables, pin_tables) = feature_tables(&data);
    let mut model = TwoTowerModel::new(&cfg.model, &query_tables, &pin_tables, cfg.seed)?;
    let t0 = Instant::now();
    let training = train_model(&mut model, &data, cfg, par, loud)?;
    say(
        loud,
        format!(
            "trained {} steps in {:.1} s, final loss {:.4}",
            training.steps,
            t0.elapsed().as_secs_f64(),
            training.loss_curve.last().map_or(f64::NAN, |p| p.loss)
        ),
    );

    let t0 = Instant::now();
    let spinner = spinner(
        loud,
        "evaluating: exact top-1000 over the whole corpus, model and reference points",
    );
    let Evaluation {
        mut metrics,
        per_query,
    } = evaluate(&model, &data, market, cfg.seed, &cfg.online, par)?;
    spinner.finish_and_clear();
    say(
        loud,
        format!("evaluated in {:.1} s", t0.elapsed().as_secs_f64()),
    );
    metrics.training = training;
    if loud {
        println!("{}", metrics.table());
    }
    Ok(RunOutput {
        metrics,
        per_query,
        read_report: None,
    })
}

/// A ticking spinner for work of unknown length, hidden when quiet.
fn spinner(loud: bool, msg: &'static str) -> ProgressBar {
    if !loud {
        return ProgressBar::hidden();
    }
    let s = ProgressBar::new_spinner();
    s.set_message(msg);
    s.enable_steady_tick(std::time::Duration::from_millis(200));
    s
}

/// A progress bar of `len` steps, hidden when quiet.
fn progress(loud: bool, len: u64, msg: &'static str) -> ProgressBar {
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

/// The towers' inputs as the model sees them, from the dataset's feature schema.
pub fn feature_tables(data: &Dataset) -> (FeatureTables, FeatureTables) {
    let defs = |specs: &[convcg_data::TableSpec]| {
        specs
            .iter()
            .map(|s| TableDef {
                name: s.name.clone(),
                rows: s.rows,
            })
            .collect::<Vec<_>>()
    };
    let s = data.schema();
    (
        FeatureTables {
            sparse: defs(&s.query_sparse),
            bags: defs(&s.query_bags),
            dense: s.query_dense,
        },
        FeatureTables {
            sparse: defs(&s.pin_sparse),
            bags: Vec::new(),
            dense: s.pin_dense,
        },
    )
}

fn dense_slice(a: &ndarray::Array2<f32>) -> Result<&[f32]> {
    match a.as_slice() {
        Some(s) => Ok(s),
        None => bail!("dense features are not in standard row-major layout"),
    }
}

fn query_input(q: &QueryFeatures) -> Result<TowerInput<'_>> {
    Ok(TowerInput {
        n: q.dense.nrows(),
        sparse: q.sparse.iter().map(Vec::as_slice).collect(),
        bags: q
            .bags
            .iter()
            .map(|b| (b.ids.as_slice(), b.offsets.as_slice()))
            .collect(),
        dense: dense_slice(&q.dense)?,
    })
}

fn pin_input(p: &PinFeatures) -> Result<TowerInput<'_>> {
    Ok(TowerInput {
        n: p.len(),
        sparse: p.sparse.iter().map(Vec::as_slice).collect(),
        bags: Vec::new(),
        dense: dense_slice(&p.dense)?,
    })
}

/// Trains `model` for `cfg.train.epochs` passes over the training examples.
pub fn train_model(
    model: &mut TwoTowerModel,
    data: &Dataset,
    cfg: &RunConfig,
    par: Par,
    loud: bool,
) -> Result<TrainingSummary> {
    let tc = &cfg.train;
    let n = data.train().len();
    if n < tc.batch_size {
        bail!(
            "only {n} training examples for a batch size of {}: lower train.batch_size or use more data",
            tc.batch_size
        );
    }
    let mut batcher = convcg_data::Batcher::new(n, tc.batch_size, cfg.seed ^ 0xBA7C4)?;
    let mut log_q = data.log_q_estimator()?;
    let steps = ((tc.epochs * n as f64) / tc.batch_size as f64).ceil() as usize;
    let mut optimizer = Optimizer::new(&cfg.optim, model.params())?;
    let mut grads = model.params().zero_grads();
    // One tape for the whole run: its buffers are reused by every step.
    let mut tape = Tape::new(par);
    let bar = progress(loud, steps as u64, "training");
    let mut curve = Vec::new();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let mut skipped = 0usize;
    for step in 1..=steps {
        let batch = data.batch(batcher.next_batch(), &mut log_q);
        // The softmax sees the B positives, the B x H hard negatives (an empty slot has
        // log q = +inf, which removes it from the loss), then any uniform corpus negatives.
        let mut candidates = batch.candidate_pins();
        let mut candidate_log_q = batch.candidate_log_q();
        if tc.uniform_negatives > 0 {
            let n_pins = data.num_pins();
            let drawn = uniform_negatives(n_pins, tc.uniform_negatives, cfg.seed, step as u64);
            candidate_log_q.extend(std::iter::repeat_n(uniform_log_q(n_pins), drawn.len()));
            candidates.extend(drawn);
        }
        let advertisers: Vec<u32> = candidates
            .iter()
            .map(|&p| data.pin_advertisers()[p as usize])
            .collect();
        let pins = data.pin_features().select(&candidates);
        let tb = TrainBatch {
            query: query_input(&batch.query)?,
            pins: pin_input(&pins)?,
            pin_ids: &candidates,
            log_q: &candidate_log_q,
            engagement: Some(TaskRows {
                weights: &batch.weight_engagement,
                task_weight: cfg.data.engagement_weight,
            }),
            conversion: Some(TaskRows {
                weights: &batch.weight_conversion,
                task_weight: cfg.data.conversion_weight,
            }),
            advertisers: Some(&advertisers),
        };
        let loss = match model.train_step_with(&mut tape, &tb, &mut grads, &mut optimizer, par) {
            Ok(loss) => loss,
            Err(ModelError::NonFinite {
                parameters_untouched: true,
                ..
            }) if tc.on_nonfinite == OnNonFinite::Skip => {
                skipped += 1;
                bar.inc(1);
                continue;
            }
            Err(e @ ModelError::NonFinite { .. }) => bail!(
                "training stopped at step {step} of {steps}: {e} (`[train] on_nonfinite = \"skip\"` skips such batches when the parameters are untouched)"
            ),
            Err(e) => return Err(e.into()),
        };
        sum += f64::from(loss);
        count += 1;
        if step % tc.log_every == 0 || step == steps {
            let mean = sum / count as f64;
            curve.push(LossPoint { step, loss: mean });
            bar.set_message(format!("loss {mean:.3}"));
            (sum, count) = (0.0, 0);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if skipped > 0 && loud {
        eprintln!("{skipped} of {steps} batches skipped for a non-finite loss or gradient");
    }
    if skipped == steps {
        bail!("every one of the {steps} training batches had a non-finite loss or gradient");
    }
    Ok(TrainingSummary {
        steps,
        batch_size: tc.batch_size,
        examples: n,
        loss_curve: curve,
    })
}

/// What [`evaluate`] measured: the metrics and every query's recall.
#[derive(Clone, Debug)]
pub struct Evaluation {
    /// The metrics (`training` left empty).
    pub metrics: Metrics,
    /// Per eval query recall@K of every retriever.
    pub per_query: QueryRecalls,
}

/// Scores the model and the reference points (popularity, recently seen, random, and with a
/// marketplace the oracle) on the eval queries of both tasks: recall@K, NDCG@K, advertiser
/// recall@K and recall@K per surface per task, and the pin and advertiser coverage of the lists
/// served to the conversion task's queries. With a marketplace, every retriever's conversion
/// lists are also served through the auction `online` ([`crate::online_metrics`]).
pub fn evaluate(
    model: &TwoTowerModel,
    data: &Dataset,
    market: Option<&Marketplace>,
    seed: u64,
    online: &AuctionConfig,
    par: Par,
) -> Result<Evaluation> {
    let k = *RECALL_KS.iter().max().unwrap_or(&1000);
    let pins = model.embed_pins(&pin_input(data.pin_features())?, EMBED_CHUNK, par)?;
    let corpus = dense_slice(&pins)?;
    let n_pins = data.num_pins();
    let d = pins.ncols();
    let eval = data.eval();
    let mut out = Metrics::default();
    let mut per_query = QueryRecalls::default();
    for (task, queries) in [
        (Task::Conversion, &eval.conversion),
        (Task::Engagement, &eval.engagement),
    ] {
        let nq = queries.keys.len();
        if nq == 0 {
            bail!("no {task:?} eval queries: the eval window holds no relevant pin");
        }
        let qf = data.query_features(&queries.keys);
        let qe = model.embed_queries(&query_input(&qf)?, EMBED_CHUNK, par)?;
        let model_top = exact_top_k(dense_slice(&qe)?, corpus, d, k, par);
        let mut counts = data.pin_counts(task);
        let other = data.pin_counts(match task {
            Task::Conversion => Task::Engagement,
            Task::Engagement => Task::Conversion,
        });
        // Ties among the task's counts (most pins have no conversion) go to the other task's.
        let tie = 1.0 / (other.iter().copied().fold(0.0f32, f32::max) + 1.0);
        for (c, o) in counts.iter_mut().zip(&other) {
            *c += o * tie;
        }
        let pop_top = popularity_top_k(&counts, nq, k);
        let seen_top = recently_seen_top_k(data, &queries.keys, &pop_top)?;
        let rand_top = random_top_k(n_pins, nq, k, seed ^ 0x5EED);
        let oracle_top = market.map(|m| {
            top_k_by(
                nq,
                n_pins,
                k,
                |q, buf| {
                    let key = &queries.keys[q];
                    match task {
                        Task::Conversion => m.truth.expected_conversion_scores(key, buf),
                        Task::Engagement => m.truth.expected_click_scores(key, buf),
                    }
                },
                par,
            )
        });
        for (name, r, top) in [
            ("model", &mut out.model, &model_top),
            ("popularity", &mut out.popularity, &pop_top),
            ("recently_seen", &mut out.recently_seen, &seen_top),
            ("random", &mut out.random, &rand_top),
        ] {
            score_into(r, task, queries, top)?;
            per_query.insert(name, task, top, &queries.relevant);
        }
        if let Some(top) = &oracle_top {
            score_into(
                out.oracle.get_or_insert_with(RetrieverMetrics::default),
                task,
                queries,
                top,
            )?;
            per_query.insert("oracle", task, top, &queries.relevant);
        }
        // NDCG, advertiser recall and per-surface recall of every retriever; coverage over the
        // conversion task's lists only (see `coverage_of`).
        let surfaces: Vec<Surface> = queries.keys.iter().map(|q| q.surface).collect();
        let retrievers = [
            ("model", &model_top),
            ("popularity", &pop_top),
            ("recently_seen", &seen_top),
            ("random", &rand_top),
        ];
        for (name, top) in retrievers
            .into_iter()
            .chain(oracle_top.iter().map(|t| ("oracle", t)))
        {
            let ranking = ranking_metrics(
                top,
                &queries.relevant,
                &surfaces,
                data.pin_advertisers(),
                &RECALL_KS,
            )?;
            out.insert_ranking(name, task, ranking);
            if task == Task::Conversion {
                let coverage = coverage_of(
                    top,
                    data.pin_advertisers(),
                    data.num_advertisers(),
                    &RECALL_KS,
                )?;
                out.coverage.insert(name.to_owned(), coverage);
            }
        }
        if let (Some(m), Task::Conversion) = (market, task) {
            let served: Vec<(&str, &TopK)> = retrievers
                .into_iter()
                .chain(oracle_top.iter().map(|t| ("oracle", t)))
                .collect();
            out.online = Some(crate::online::online_metrics(
                m,
                &queries.keys,
                &served,
                online,
            )?);
        }
        let name = format!("{task:?}").to_lowercase();
        out.eval
            .skipped_without_relevant
            .insert(name.clone(), queries.skipped_without_relevant);
        out.eval
            .subsampled_from
            .insert(name, queries.subsampled_from);
        match task {
            Task::Conversion => out.eval.conversion_queries = nq,
            Task::Engagement => out.eval.engagement_queries = nq,
        }
    }
    out.eval = EvalSummary {
        corpus_pins: n_pins,
        ..out.eval
    };
    Ok(Evaluation {
        metrics: out,
        per_query,
    })
}

/// The recently-seen baseline: per query, the pins of the user's impressions strictly before
/// the query's moment, most recent first ([`Dataset::recently_seen`]), then popularity's list
/// (`popularity`, one row per query) for the rest of the K slots, skipping pins already listed.
fn recently_seen_top_k(data: &Dataset, keys: &[QueryKey], popularity: &TopK) -> Result<TopK> {
    let k = popularity.k;
    if popularity.num_queries() != keys.len() {
        bail!(
            "{} popularity lists for {} queries",
            popularity.num_queries(),
            keys.len()
        );
    }
    let mut ids = Vec::with_capacity(keys.len() * k);
    for (q, key) in keys.iter().enumerate() {
        let mut list = data.recently_seen(key, k);
        let mut listed: std::collections::HashSet<u32> = list.iter().copied().collect();
        for &p in popularity.row(q) {
            if list.len() == k {
                break;
            }
            if listed.insert(p) {
                list.push(p);
            }
        }
        ids.extend_from_slice(&list);
    }
    // Rank scores, decreasing: the lists carry no other score.
    let scores = (0..keys.len())
        .flat_map(|_| (0..k).map(|r| (k - r) as f32))
        .collect();
    Ok(TopK { k, ids, scores })
}

/// Scores one retriever's top K on one task's queries; on the conversion task also against the
/// clean (true) conversions where the queries carry them, counting only queries that have some.
fn score_into(
    r: &mut RetrieverMetrics,
    task: Task,
    queries: &EvalQueries,
    top: &TopK,
) -> Result<()> {
    let m = flatten(&recall_at_k(top, &queries.relevant, &RECALL_KS)?);
    match task {
        Task::Engagement => r.engagement = m,
        Task::Conversion => r.conversion = m,
    }
    let Some(clean) = queries
        .relevant_clean
        .as_ref()
        .filter(|_| task == Task::Conversion)
    else {
        return Ok(());
    };
    let keep: Vec<usize> = (0..clean.len()).filter(|&q| !clean[q].is_empty()).collect();
    if keep.is_empty() {
        return Ok(());
    }
    let sub = TopK {
        k: top.k,
        ids: keep
            .iter()
            .flat_map(|&q| top.row(q).iter().copied())
            .collect(),
        scores: keep
            .iter()
            .flat_map(|&q| top.row_scores(q).iter().copied())
            .collect(),
    };
    let rel: Vec<Vec<u32>> = keep.iter().map(|&q| clean[q].clone()).collect();
    r.conversion_clean = Some(flatten(&recall_at_k(&sub, &rel, &RECALL_KS)?));
    Ok(())
}

/// A fresh run directory under `runs/`, named by time and seed.
pub fn default_run_dir(seed: u64) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = PathBuf::from("runs").join(format!("train-{secs}-seed{seed}"));
    let mut dir = base.clone();
    let mut i = 1;
    while dir.exists() {
        dir = PathBuf::from(format!("{}-{i}", base.display()));
        i += 1;
    }
    dir
}
