//! One training run end to end: an event log (the synthetic marketplace, or a canonical-schema
//! directory), examples, training, evaluation, outputs. Both sources share everything after the
//! log is in hand.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::ProgressBar;

use convcg_data::io::{ReadOptions, ReadReport, read_log};
use convcg_data::{
    Batcher, Dataset, EvalProtocol, EvalQueries, EventLog, FeatureSchema, FeatureState,
    GroundTruth, LogQEstimator, Marketplace, PinFeatures, QueryFeatures, QueryKey, Surface, Task,
    uniform_log_q, uniform_negatives,
};
use convcg_eval::{RECALL_KS, TopK, popularity_top_k, random_top_k, recall_at_k, top_k_by};
use convcg_kernels::{Bf16Engine, Par, Precision};
use convcg_model::{
    Error as ModelError, FeatureTables, Optimizer, Shard, TableDef, Tape, TaskRows, TowerInput,
    TrainBatch, TwoTowerModel,
};

use crate::checkpoint::{
    CHECKPOINT_DIR, Checkpoint, FEATURE_STATE_FILE, MODEL_FILE, RunSource, SOURCE_FILE,
    TrainingState, checkpoint_name, data_fingerprint, list_checkpoints, newest_usable, prune,
    remove_stale_temp_files, write_feature_state,
};
use crate::compare::METRICS_FILE;
use crate::config::{OnNonFinite, RunConfig, TrainPrecision};
use crate::dist::{CorpusSearch, Ranks};
use crate::fault::FaultPlan;
use crate::metrics::{
    EvalSummary, LossPoint, Metrics, QueryRecalls, RetrieverMetrics, TrainingSummary, coverage_of,
    flatten, ranking_metrics,
};
use crate::output::write_atomic;
use crate::per_query::{PER_QUERY_FILE, PerQuery, QueryOutcomes, QuerySet, TrafficOutcomes};
use crate::progress::{progress, spinner};
use crate::report::REPORT_DIR;
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
pub(crate) const EMBED_CHUNK: usize = 4096;

/// What a run produced: its metrics (as written to `metrics.json`), every eval query's recall
/// per retriever (for paired comparisons), and, for a run on a directory, what was read.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// The metrics written to `metrics.json`.
    pub metrics: Metrics,
    /// Per eval query recall@K of every retriever.
    pub per_query: QueryRecalls,
    /// The model's figures per eval query, as written to `per_query.json`.
    pub model_queries: PerQuery,
    /// The reader's report (rows read and skipped per table) of a run on a directory.
    pub read_report: Option<ReadReport>,
}

/// How a run is steered from outside: what it prints, when it stops early, and (tests only)
/// where it fails.
#[derive(Debug)]
pub struct RunControl {
    /// Progress bars and tables, or nothing.
    pub verbosity: Verbosity,
    /// When set (by a Ctrl-C handler), the run writes a checkpoint at the next step boundary and
    /// stops with [`Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
    /// Test-only fault injection ([`FaultPlan::none`] otherwise).
    pub faults: FaultPlan,
}

impl RunControl {
    /// No interruption, no faults.
    pub fn new(verbosity: Verbosity) -> RunControl {
        RunControl {
            verbosity,
            stop: None,
            faults: FaultPlan::none(),
        }
    }

    fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst))
    }
}

/// A run stopped on request (Ctrl-C) after saving a checkpoint.
#[derive(Debug, thiserror::Error)]
#[error(
    "interrupted after step {step} of {steps}; checkpoint {} saved. Continue with `convcg train --resume {}`",
    checkpoint.display(),
    run_dir.display()
)]
pub struct Interrupted {
    /// Steps done.
    pub step: usize,
    /// Steps of the whole run.
    pub steps: usize,
    /// The checkpoint written.
    pub checkpoint: PathBuf,
    /// The run directory to resume.
    pub run_dir: PathBuf,
}

/// Where a fresh run's event log comes from.
#[derive(Clone, Copy, Debug)]
pub enum TrainData<'a> {
    /// The synthetic marketplace of the config's `[synth]` and seed.
    Synthetic,
    /// The canonical-schema event log in a directory, read with `[data] on_bad_row` (skipped
    /// rows are counted in [`RunOutput::read_report`] and printed unless quiet). If the directory
    /// holds `synth.toml` (written by `convcg synth`), the marketplace is regenerated from it so
    /// that the clean-label, oracle and simulated metrics use its ground truth; otherwise they are
    /// absent, as for any real log. [`RunConfig::for_dataset_dir`] says how a dataset's own
    /// settings get into the config.
    Directory(&'a Path),
    /// An event log already in memory, with its marketplace when it is synthetic. Nothing in the
    /// run directory could rebuild such data, so the run writes no periodic checkpoint and cannot
    /// be resumed; several runs on the same data (`convcg ablate`) make or read it once.
    Loaded {
        /// The log.
        log: &'a EventLog,
        /// Its marketplace, if it was generated.
        market: Option<&'a Marketplace>,
    },
}

/// What a request trains: a fresh run, or the run already in its directory.
#[derive(Clone, Copy, Debug)]
enum Job<'a> {
    Fresh {
        config: &'a RunConfig,
        data: TrainData<'a>,
    },
    Resume,
}

/// One training run: what it trains (a fresh run's config and data, or a run directory to
/// continue), the run directory it writes, and how it is steered ([`RunControl`]; quiet unless
/// told otherwise).
///
/// A fresh run writes `config.toml`, `source.toml` (not for [`TrainData::Loaded`]), checkpoints
/// every `[train] checkpoint_every` steps and on a stop request, then `model.ckpt`,
/// `per_query.json` and `metrics.json` (the mark of a finished run).
///
/// ```no_run
/// use convcg::{RunConfig, TrainData, TrainRequest};
/// let cfg = RunConfig::default();
/// let out = TrainRequest::new(&cfg, TrainData::Synthetic, "runs/example".as_ref()).run()?;
/// println!("{}", out.metrics.table());
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Debug)]
pub struct TrainRequest<'a> {
    job: Job<'a>,
    run_dir: &'a Path,
    control: RunControl,
    replace: bool,
    ranks: Ranks,
}

impl<'a> TrainRequest<'a> {
    /// A fresh run of `config` on `data`, written into `run_dir` (created if missing).
    pub fn new(config: &'a RunConfig, data: TrainData<'a>, run_dir: &'a Path) -> Self {
        Self {
            job: Job::Fresh { config, data },
            run_dir,
            control: RunControl::new(Verbosity::Quiet),
            replace: false,
            ranks: Ranks::single(),
        }
    }

    /// Continues the run in `run_dir` from its newest usable checkpoint: reads `config.toml`
    /// and `source.toml`, rebuilds the dataset from the same source, restores the model,
    /// optimisers, sampler, log-q estimator and loss curve, trains the remaining steps and
    /// writes what a fresh run writes. With the same thread count the final parameters and the
    /// loss curve are bit-identical to those of an uninterrupted run. An unusable newest
    /// checkpoint is reported (file and reason), renamed to `*.bad`, and the previous one used.
    pub fn resume(run_dir: &'a Path) -> Self {
        Self {
            job: Job::Resume,
            run_dir,
            control: RunControl::new(Verbosity::Quiet),
            replace: false,
            ranks: Ranks::single(),
        }
    }

    /// Steered by `control`: what it prints, when it stops early, where it fails (tests).
    pub fn with_control(mut self, control: RunControl) -> Self {
        self.control = control;
        self
    }

    /// A fresh run into a directory that holds another run replaces it (its files, checkpoints
    /// and `report/` are deleted first) instead of failing.
    pub fn replacing(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// Trains data-parallel over `ranks` ([`crate::dist`]): every rank makes the same request,
    /// trains its share of each batch, and rank 0 writes the run directory (which the others
    /// must see too to resume: a shared file system). The result is the single process's up
    /// to the order of float sums; a resume may use another number of ranks.
    pub fn with_ranks(mut self, ranks: Ranks) -> Self {
        self.ranks = ranks;
        self
    }

    /// Prints progress and tables, or nothing.
    pub fn with_verbosity(mut self, verbosity: Verbosity) -> Self {
        self.control.verbosity = verbosity;
        self
    }

    /// Trains and evaluates.
    ///
    /// # Errors
    /// If the config is invalid; the run directory already holds a run (unless
    /// [`TrainRequest::replacing`]); a file cannot be written (the error says which, why, and
    /// what is intact); the data cannot be read (the error names the file, row and column) or
    /// `synth.toml` does not describe the tables beside it; training or evaluation fails; the
    /// run is interrupted ([`Interrupted`]). A resume also fails if the run directory is not
    /// one, its data directory is gone, no checkpoint is usable, the checkpoint's config or
    /// source differ from the run directory's, or the data no longer builds the same examples.
    pub fn run(&self) -> Result<RunOutput> {
        let (config, data) = match self.job {
            Job::Resume => return resume(self.run_dir, &self.control, &self.ranks),
            Job::Fresh { config, data } => (config, data),
        };
        let source = match data {
            TrainData::Loaded { log, market } => {
                if self.ranks.is_distributed() {
                    bail!("a run on a log in memory trains in one process, not over MPI ranks");
                }
                return train_loaded(log, market, config, self.run_dir, &self.control);
            }
            TrainData::Synthetic => RunSource::Synthetic,
            TrainData::Directory(dir) => RunSource::Directory {
                path: std::fs::canonicalize(dir)
                    .with_context(|| format!("cannot open the data directory {}", dir.display()))?,
            },
        };
        let place = Place {
            run_dir: self.run_dir,
            control: &self.control,
            ranks: &self.ranks,
        };
        train_source(config, &source, &place, self.replace)
    }
}

/// [`TrainData::Loaded`]: writes `config.toml`, `model.ckpt`, `per_query.json` and
/// `metrics.json` into `out_dir`, and no periodic checkpoint.
fn train_loaded(
    log: &EventLog,
    market: Option<&Marketplace>,
    cfg: &RunConfig,
    out_dir: &Path,
    control: &RunControl,
) -> Result<RunOutput> {
    let mut cfg = cfg.clone();
    cfg.train.checkpoint_every = 0;
    cfg.validate()?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the run directory {}", out_dir.display()))?;
    let config_toml = cfg.to_toml()?;
    write_atomic(&out_dir.join("config.toml"), config_toml.as_bytes())?;
    let ranks = Ranks::single();
    let session = Session {
        run_dir: out_dir,
        source: &RunSource::Supplied,
        config_toml,
        control,
        ranks: &ranks,
    };
    let output = in_pool(&cfg, |par| {
        train_and_evaluate(&cfg, log, market, par, &session, None)
    })?;
    write_results(out_dir, &output)?;
    Ok(output)
}

/// A fresh run on `source` into `out_dir`: writes `config.toml` and `source.toml` first, then
/// what [`execute`] writes.
fn train_source(
    cfg: &RunConfig,
    source: &RunSource,
    place: &Place<'_>,
    replace: bool,
) -> Result<RunOutput> {
    cfg.validate()?;
    let out_dir = place.run_dir;
    if !place.ranks.is_leader() {
        return execute(cfg, source, place, None);
    }
    claim_run_dir(out_dir, replace)?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create the run directory {}", out_dir.display()))?;
    // Created now, so that a directory that cannot hold checkpoints fails the run before its
    // data is read rather than at the first checkpoint.
    create_checkpoint_dir(out_dir)?;
    write_atomic(&out_dir.join("config.toml"), cfg.to_toml()?.as_bytes())?;
    write_atomic(&out_dir.join(SOURCE_FILE), source.to_toml()?.as_bytes())?;
    execute(cfg, source, place, None)
}

/// Where a run writes (its directory), how it is steered, and the ranks it runs on.
#[derive(Clone, Copy)]
struct Place<'a> {
    run_dir: &'a Path,
    control: &'a RunControl,
    ranks: &'a Ranks,
}

/// The summary of a finished training loop (steps, loss curve), written just before
/// `model.ckpt`: the two together mark training as finished, so that a run killed during
/// evaluation resumes by evaluating its saved model.
pub const TRAINING_FILE: &str = "training.json";

/// The files a run writes into its directory, which `--force` deletes before a new run.
const RUN_FILES: [&str; 7] = [
    "config.toml",
    SOURCE_FILE,
    TRAINING_FILE,
    MODEL_FILE,
    FEATURE_STATE_FILE,
    PER_QUERY_FILE,
    METRICS_FILE,
];

/// The folders a run (or `convcg report` on it) writes into its directory, deleted likewise.
const RUN_FOLDERS: [&str; 2] = [CHECKPOINT_DIR, REPORT_DIR];

/// Refuses a directory that holds another run, unless `replace`: then deletes that run's files
/// and folders ([`RUN_FILES`], [`RUN_FOLDERS`]), and nothing else of the directory.
fn claim_run_dir(out_dir: &Path, replace: bool) -> Result<()> {
    let checkpoints = match out_dir.join(CHECKPOINT_DIR) {
        dir if dir.is_dir() => list_checkpoints(&dir)?,
        _ => Vec::new(),
    };
    let held = RUN_FILES.iter().find(|f| out_dir.join(f).is_file());
    if held.is_none() && checkpoints.is_empty() {
        return Ok(());
    }
    if !replace {
        let dir = out_dir.display();
        if out_dir.join(METRICS_FILE).is_file() {
            bail!(
                "{dir} already holds a finished run ({METRICS_FILE}): choose another --out, or pass --force to replace it (its files, checkpoints and {REPORT_DIR}/ are deleted)"
            );
        }
        if let Some((step, path)) = checkpoints.first() {
            bail!(
                "{dir} already holds a checkpoint of a run (step {step}, {}): continue it with `convcg train --resume {dir}`, or pass --force to start over",
                path.display()
            );
        }
        bail!(
            "{dir} already holds a run ({}): resume it with `convcg train --resume {dir}` if it was stopped, choose another --out, or pass --force to replace it",
            held.copied().unwrap_or(CHECKPOINT_DIR)
        );
    }
    for file in RUN_FILES {
        let path = out_dir.join(file);
        if path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot delete {} (--force)", path.display()))?;
        }
    }
    for folder in RUN_FOLDERS {
        let path = out_dir.join(folder);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot delete {} (--force)", path.display()))?;
        }
    }
    Ok(())
}

/// [`TrainRequest::resume`].
fn resume(run_dir: &Path, control: &RunControl, ranks: &Ranks) -> Result<RunOutput> {
    let loud = control.verbosity == Verbosity::Normal;
    let place = Place {
        run_dir,
        control,
        ranks,
    };
    // Every rank reads the run directory; rank 0 alone changes it.
    let leader = ranks.is_leader();
    let cfg_path = run_dir.join("config.toml");
    let text = std::fs::read_to_string(&cfg_path).with_context(|| {
        format!(
            "cannot read {}: is {} a run directory?",
            cfg_path.display(),
            run_dir.display()
        )
    })?;
    let cfg = RunConfig::parse(&text, &cfg_path.display().to_string())?;
    if run_dir.join(METRICS_FILE).is_file() {
        bail!(
            "{} is a finished run ({} is written): there is nothing to resume; `convcg train --out NEW_DIR` starts another run, and `--force` replaces this one",
            run_dir.display(),
            METRICS_FILE
        );
    }
    let source = RunSource::read(run_dir)?;
    if let RunSource::Directory { path } = &source
        && !path.is_dir()
    {
        bail!(
            "the data directory {} that this run trains on is gone (input files deleted?): restore it, then resume again; the checkpoints in {} are intact",
            path.display(),
            run_dir.join(CHECKPOINT_DIR).display()
        );
    }
    if let Some(ckpt) = trained_model(run_dir, &cfg, &source)? {
        say(
            loud,
            format!(
                "training had finished ({} is written): evaluating the saved model",
                MODEL_FILE
            ),
        );
        return execute(&cfg, &source, &place, Some(ckpt));
    }
    let dir = run_dir.join(CHECKPOINT_DIR);
    let stale = if leader {
        remove_stale_temp_files(&dir)
    } else {
        Vec::new()
    };
    for p in stale {
        say(
            loud,
            format!(
                "removed {}, left by an interrupted checkpoint write",
                p.display()
            ),
        );
    }
    let found = newest_usable(&dir)?;
    for e in found.refused.iter().filter(|_| leader) {
        // Always printed: the user should know that a checkpoint was lost and why.
        eprintln!("{e}; falling back to an older checkpoint");
        let mut aside = e.path.clone().into_os_string();
        aside.push(".bad");
        let _ = std::fs::rename(&e.path, &aside);
    }
    let ckpt = found.checkpoint;
    check_same_run(&ckpt, &found.path, run_dir, &cfg, &source)?;
    let Some(state) = &ckpt.training else {
        bail!(
            "{} holds no training state (it is a final model, not a checkpoint)",
            found.path.display()
        );
    };
    say(
        loud,
        format!(
            "resuming from {} (step {} of {})",
            found.path.display(),
            state.step,
            state.total_steps
        ),
    );
    // A file system that showed the ranks different checkpoints would split the run.
    if ranks.is_distributed() && ranks.leaders(state.step as f64) != state.step as f64 {
        bail!(
            "rank {} resumes from step {}, but rank 0 from another step: the ranks must see the same run directory",
            ranks.rank(),
            state.step
        );
    }
    execute(&cfg, &source, &place, Some(ckpt))
}

/// The final model of a run killed after training, before its results were written: `model.ckpt`
/// beside `training.json` (written first), with the run's own config and source; `None` when
/// training had not finished.
fn trained_model(
    run_dir: &Path,
    cfg: &RunConfig,
    source: &RunSource,
) -> Result<Option<Checkpoint>> {
    let (model, summary) = (run_dir.join(MODEL_FILE), run_dir.join(TRAINING_FILE));
    if !(model.is_file() && summary.is_file()) {
        return Ok(None);
    }
    let ckpt = Checkpoint::read(&model)
        .with_context(|| format!("cannot read the trained model {}", model.display()))?;
    check_same_run(&ckpt, &model, run_dir, cfg, source)?;
    Ok(Some(ckpt))
}

/// `Ok` when the checkpoint at `path` was written by the run in `run_dir`: the config it saved
/// equals `config.toml`'s (`cfg`) and its source `source.toml`'s; else an error naming the
/// differing keys or the two sources.
fn check_same_run(
    ckpt: &Checkpoint,
    path: &Path,
    run_dir: &Path,
    cfg: &RunConfig,
    source: &RunSource,
) -> Result<()> {
    let saved = RunConfig::from_toml(&ckpt.config_toml)
        .with_context(|| format!("in the config saved in {}", path.display()))?;
    if &saved != cfg {
        bail!(
            "{} differs from the config saved in {} (keys: {}): a resumed run must keep its config",
            run_dir.join("config.toml").display(),
            path.display(),
            saved.differing_keys(cfg)?.join(", ")
        );
    }
    if &ckpt.source != source {
        bail!(
            "{} says the data is {:?}, but {} was trained on {:?}",
            run_dir.join(SOURCE_FILE).display(),
            source,
            path.display(),
            ckpt.source
        );
    }
    Ok(())
}

/// Writes `training.json`, the summary of a finished training loop.
fn write_training_summary(run_dir: &Path, summary: &TrainingSummary) -> Result<()> {
    write_atomic(
        &run_dir.join(TRAINING_FILE),
        serde_json::to_string_pretty(summary)?.as_bytes(),
    )
}

/// Reads `training.json`.
fn read_training_summary(run_dir: &Path) -> Result<TrainingSummary> {
    let path = run_dir.join(TRAINING_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a training summary", path.display()))
}

/// Where a run saves its progress, and how it is steered.
struct Session<'a> {
    run_dir: &'a Path,
    source: &'a RunSource,
    config_toml: String,
    control: &'a RunControl,
    ranks: &'a Ranks,
}

fn execute(
    cfg: &RunConfig,
    source: &RunSource,
    place: &Place<'_>,
    resume: Option<Checkpoint>,
) -> Result<RunOutput> {
    let session = Session {
        run_dir: place.run_dir,
        source,
        config_toml: cfg.to_toml()?,
        control: place.control,
        ranks: place.ranks,
    };
    let output = in_pool(cfg, |par| run(cfg, &session, resume, par))?;
    if place.ranks.is_leader() {
        write_results(place.run_dir, &output)?;
    }
    Ok(output)
}

/// Writes `per_query.json`, then `metrics.json` (the mark of a finished run), atomically.
fn write_results(out_dir: &Path, output: &RunOutput) -> Result<()> {
    output.model_queries.write(out_dir)?;
    write_atomic(
        &out_dir.join(METRICS_FILE),
        serde_json::to_string_pretty(&output.metrics)?.as_bytes(),
    )
}

/// Runs `f` on a thread pool of the run's thread count, handing it the matching parallelism.
pub(crate) fn in_pool<T: Send>(
    cfg: &RunConfig,
    f: impl FnOnce(Par) -> Result<T> + Send,
) -> Result<T> {
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
    pool.install(|| f(par))
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
    session: &Session<'_>,
    resume: Option<Checkpoint>,
    par: Par,
) -> Result<RunOutput> {
    let loud = session.control.verbosity == Verbosity::Normal;
    match session.source {
        RunSource::Synthetic => {
            let market = generate(cfg, loud)?;
            train_and_evaluate(cfg, &market.log, Some(&market), par, session, resume)
        }
        RunSource::Directory { path } => {
            let (log, market, report) = load(path, cfg, loud)?;
            let mut out = train_and_evaluate(cfg, &log, market.as_ref(), par, session, resume)?;
            let skipped = report.skipped.total();
            if loud && skipped > 0 {
                println!("{skipped} bad rows skipped while reading (on_bad_row = \"skip\")");
            }
            out.read_report = Some(report);
            Ok(out)
        }
        RunSource::Supplied => bail!(
            "this run trained on data supplied in memory (convcg ablate): nothing rebuilds its data, so it cannot be resumed"
        ),
    }
}

/// Everything after the log is in hand: examples, training, evaluation, the results table.
fn train_and_evaluate(
    cfg: &RunConfig,
    log: &EventLog,
    market: Option<&Marketplace>,
    par: Par,
    session: &Session<'_>,
    resume: Option<Checkpoint>,
) -> Result<RunOutput> {
    let loud = session.control.verbosity == Verbosity::Normal;
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
    if let Some(warning) = data.stats().masking_warning() {
        // Printed even when quiet: the run trains, but its conversion task learns nothing.
        eprintln!("{warning}");
    }

    let tables = feature_tables(data.schema());
    let mut model = TwoTowerModel::new(&cfg.model, &tables.0, &tables.1, cfg.seed)?;
    // A final model (no training state) was trained to the end: only evaluation is left.
    let trained = resume.as_ref().is_some_and(|c| c.training.is_none());
    let resume = match resume {
        Some(ckpt) => {
            if (&ckpt.query_tables, &ckpt.pin_tables) != (&tables.0, &tables.1) {
                bail!(
                    "the data no longer builds the feature tables the checkpoint was trained with (vocabularies or dense widths changed): it cannot be resumed on this data"
                );
            }
            model
                .params_mut()
                .assign_from(&ckpt.params)
                .context("the checkpoint's parameters do not fit the model")?;
            ckpt.training
        }
        None => None,
    };
    let saver = Saver {
        session,
        every: cfg.train.checkpoint_every,
        every_s: (cfg.train.checkpoint_every_s > 0.0)
            .then(|| Duration::from_secs_f64(cfg.train.checkpoint_every_s)),
        last_saved: Cell::new(Instant::now()),
        tables: &tables,
        threads: cfg.resolved_threads(),
        fingerprint: data_fingerprint(data.train()),
    };
    let training = if trained {
        read_training_summary(session.run_dir)?
    } else {
        let t0 = Instant::now();
        let training = train_loop(&mut model, &data, cfg, par, loud, &saver, resume)?;
        if session.ranks.is_leader() {
            // The summary first: a model.ckpt beside it marks training as finished.
            write_training_summary(session.run_dir, &training)?;
            saver.save_model(&model)?;
        }
        say(
            loud,
            format!(
                "trained {} steps in {:.1} s, final loss {:.4}",
                training.steps,
                t0.elapsed().as_secs_f64(),
                training.loss_curve.last().map_or(f64::NAN, |p| p.loss)
            ),
        );
        training
    };
    if session.ranks.is_leader() {
        saver.save_feature_state(&data.feature_state(log))?;
    }
    session.control.faults.before_evaluation();
    if cfg.data.eval_protocol == EvalProtocol::None {
        say(
            loud,
            "no evaluation: `[data] eval_protocol = \"none\"` trains on the whole log and holds out no query".to_owned(),
        );
        return Ok(RunOutput {
            metrics: Metrics {
                training,
                ..Metrics::default()
            },
            per_query: QueryRecalls::default(),
            model_queries: PerQuery::default(),
            read_report: None,
        });
    }

    let t0 = Instant::now();
    let spinner = spinner(
        loud,
        "evaluating: exact top-1000 over the whole corpus, model and reference points",
    );
    let Evaluation {
        mut metrics,
        per_query,
        model_queries,
    } = evaluate(&model, &data, market, cfg, session.ranks, par)?;
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
        model_queries,
        read_report: None,
    })
}

/// The towers' inputs as the model sees them, from a dataset's feature schema.
pub(crate) fn feature_tables(s: &FeatureSchema) -> (FeatureTables, FeatureTables) {
    let defs = |specs: &[convcg_data::TableSpec]| {
        specs
            .iter()
            .map(|s| TableDef {
                name: s.name.clone(),
                rows: s.rows,
                pin_table: s.pin_table.clone(),
            })
            .collect::<Vec<_>>()
    };
    (
        FeatureTables {
            sparse: defs(&s.query_sparse),
            bags: defs(&s.query_bags),
            dense: s.query_dense,
            id_code: s.id_code_dim,
        },
        FeatureTables {
            sparse: defs(&s.pin_sparse),
            bags: Vec::new(),
            dense: s.pin_dense,
            id_code: s.id_code_dim,
        },
    )
}

pub(crate) fn dense_slice(a: &ndarray::Array2<f32>) -> Result<&[f32]> {
    match a.as_slice() {
        Some(s) => Ok(s),
        None => bail!("dense features are not in standard row-major layout"),
    }
}

pub(crate) fn query_input(q: &QueryFeatures) -> Result<TowerInput<'_>> {
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

pub(crate) fn pin_input(p: &PinFeatures) -> Result<TowerInput<'_>> {
    Ok(TowerInput {
        n: p.len(),
        sparse: p.sparse.iter().map(Vec::as_slice).collect(),
        bags: Vec::new(),
        dense: dense_slice(&p.dense)?,
    })
}

/// Writes a run's checkpoints and final model.
struct Saver<'a> {
    session: &'a Session<'a>,
    /// `[train] checkpoint_every` (0: only on a stop request).
    every: usize,
    /// `[train] checkpoint_every_s` (`None`: off).
    every_s: Option<Duration>,
    /// When the last checkpoint was written (or training began).
    last_saved: Cell<Instant>,
    tables: &'a (FeatureTables, FeatureTables),
    threads: usize,
    fingerprint: u64,
}

impl Saver<'_> {
    fn checkpoint(&self, model: &TwoTowerModel, training: Option<TrainingState>) -> Checkpoint {
        Checkpoint {
            config_toml: self.session.config_toml.clone(),
            source: self.session.source.clone(),
            query_tables: self.tables.0.clone(),
            pin_tables: self.tables.1.clone(),
            params: model.params().clone(),
            training,
        }
    }

    /// Writes `checkpoints/step-S.ckpt` and prunes the old ones; returns its path.
    fn save_step(&self, model: &TwoTowerModel, state: TrainingState) -> Result<PathBuf> {
        let dir = create_checkpoint_dir(self.session.run_dir)?;
        let path = dir.join(checkpoint_name(state.step));
        self.write(&path, &self.checkpoint(model, Some(state)))?;
        prune(&dir)?;
        self.last_saved.set(Instant::now());
        Ok(path)
    }

    /// Writes `model.ckpt`: the final parameters.
    fn save_model(&self, model: &TwoTowerModel) -> Result<()> {
        let path = self.session.run_dir.join(MODEL_FILE);
        self.write(&path, &self.checkpoint(model, None))
    }

    /// Writes `features.state`: the feature state after the log, for serving.
    fn save_feature_state(&self, state: &FeatureState) -> Result<()> {
        let path = self.session.run_dir.join(FEATURE_STATE_FILE);
        write_feature_state(&path, state, &self.session.control.faults)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}{}", path.display(), io_hint(&e)))
    }

    /// Writes `ckpt` to `path` through the fault seam; on failure the error says what failed,
    /// why, and which checkpoint is intact.
    fn write(&self, path: &Path, ckpt: &Checkpoint) -> Result<()> {
        let Err(e) = ckpt.write(path, &self.session.control.faults) else {
            return Ok(());
        };
        let run_dir = self.session.run_dir;
        let intact = list_checkpoints(&run_dir.join(CHECKPOINT_DIR))
            .ok()
            .and_then(|all| all.into_iter().next());
        let next = match intact {
            Some((step, p)) => format!(
                "the checkpoint {} (step {step}) is intact: fix the problem, then continue with `convcg train --resume {}`",
                p.display(),
                run_dir.display()
            ),
            None => {
                "there is no earlier checkpoint: fix the problem and start the run again".to_owned()
            }
        };
        bail!(
            "cannot write {}: {e}{}; {next}",
            path.display(),
            io_hint(&e)
        )
    }
}

/// `run_dir/checkpoints`, created if missing.
fn create_checkpoint_dir(run_dir: &Path) -> Result<PathBuf> {
    let dir = run_dir.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the checkpoint directory {}: {e}{}",
            dir.display(),
            io_hint(&e)
        )
    })?;
    Ok(dir)
}

/// What an I/O error most likely means for the user, for messages.
fn io_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::StorageFull => " (the disk is full)",
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
            " (the directory is not writable)"
        }
        std::io::ErrorKind::NotFound => " (was the run directory removed?)",
        std::io::ErrorKind::NotADirectory => " (a file is in the way)",
        _ => "",
    }
}

/// Everything the training loop carries from one step to the next.
struct LoopState {
    /// Steps done.
    step: usize,
    batcher: Batcher,
    log_q: LogQEstimator,
    optimizer: Optimizer,
    curve: Vec<LossPoint>,
    sum: f64,
    count: usize,
    skipped: usize,
}

impl LoopState {
    fn fresh(model: &TwoTowerModel, data: &Dataset, cfg: &RunConfig) -> Result<LoopState> {
        Ok(LoopState {
            step: 0,
            batcher: Batcher::new(data.train().len(), cfg.train.batch_size, cfg.seed ^ 0xBA7C4)?,
            log_q: data.log_q_estimator()?,
            optimizer: Optimizer::new(&cfg.optim, model.params())?,
            curve: Vec::new(),
            sum: 0.0,
            count: 0,
            skipped: 0,
        })
    }

    /// The state saved in a checkpoint, checked against this run's data and length.
    fn restore(
        t: TrainingState,
        model: &TwoTowerModel,
        data: &Dataset,
        cfg: &RunConfig,
        steps: usize,
        loud: bool,
    ) -> Result<LoopState> {
        let n = data.train().len();
        let fingerprint = data_fingerprint(data.train());
        if t.examples != n as u64 || t.data_fingerprint != fingerprint {
            bail!(
                "the data has changed since the checkpoint: {n} training examples (fingerprint {fingerprint:016x}) now, {} ({:016x}) then",
                t.examples,
                t.data_fingerprint
            );
        }
        if t.total_steps != steps as u64 || t.step > t.total_steps {
            bail!(
                "the checkpoint is at step {} of {}, but this run takes {steps} steps",
                t.step,
                t.total_steps
            );
        }
        let threads = cfg.resolved_threads() as u64;
        if t.threads != threads && loud {
            eprintln!(
                "warning: the checkpoint was written with {} threads and this run has {threads}: the result will differ slightly from an uninterrupted run",
                t.threads
            );
        }
        let usize_of = |v: u64, what: &str| {
            usize::try_from(v).with_context(|| format!("checkpoint {what} {v} is too large"))
        };
        Ok(LoopState {
            step: usize_of(t.step, "step")?,
            batcher: Batcher::from_state(n, cfg.train.batch_size, t.sampler)?,
            log_q: data.log_q_estimator_from(&t.log_q)?,
            optimizer: Optimizer::from_state(&cfg.optim, model.params(), t.optimizer)?,
            curve: t.loss_curve,
            sum: t.loss_sum,
            count: usize_of(t.loss_count, "loss count")?,
            skipped: usize_of(t.skipped, "skipped count")?,
        })
    }

    fn snapshot(&self, saver: &Saver<'_>, steps: usize, examples: usize) -> TrainingState {
        TrainingState {
            step: self.step as u64,
            total_steps: steps as u64,
            threads: saver.threads as u64,
            examples: examples as u64,
            data_fingerprint: saver.fingerprint,
            loss_sum: self.sum,
            loss_count: self.count as u64,
            skipped: self.skipped as u64,
            loss_curve: self.curve.clone(),
            sampler: self.batcher.state(),
            log_q: self.log_q.state(),
            optimizer: self.optimizer.state(),
        }
    }
}

/// The precision a training step's products run in for `[train] precision`: bf16 only where
/// the CPU multiplies bf16 in hardware (AMX); elsewhere the run says so and keeps f32.
fn step_precision(wanted: TrainPrecision, loud: bool) -> Precision {
    match (wanted, Bf16Engine::detect()) {
        (TrainPrecision::F32, _) => Precision::F32,
        (TrainPrecision::Bf16, Bf16Engine::Amx) => {
            say(loud, "training with bf16 products on AMX tiles".to_owned());
            Precision::Bf16
        }
        (TrainPrecision::Bf16, Bf16Engine::Emulated) => {
            // Printed even when quiet: the run is not what its config asked for.
            eprintln!(
                "warning: train.precision = \"bf16\": this CPU has no AMX bf16 products, so \
                 training runs in f32"
            );
            Precision::F32
        }
    }
}

/// The training loop. With a `saver`, it checkpoints every `[train] checkpoint_every` steps and
/// on a stop request; with `resume`, it continues from that state.
fn train_loop(
    model: &mut TwoTowerModel,
    data: &Dataset,
    cfg: &RunConfig,
    par: Par,
    loud: bool,
    saver: &Saver<'_>,
    resume: Option<TrainingState>,
) -> Result<TrainingSummary> {
    let tc = &cfg.train;
    let ranks = saver.session.ranks;
    let n = data.train().len();
    if n == 0 {
        bail!(
            "no training examples: the training part of the log holds no click, save or conversion with a known label (see `train positives` above, and [data] click_window_days, which masks conversions too recent to be known)"
        );
    }
    if n < tc.batch_size {
        bail!(
            "only {n} training examples for a batch size of {}: lower train.batch_size or use more data",
            tc.batch_size
        );
    }
    let steps = tc.steps(n);
    let log_interval = tc.log_interval(steps);
    let mut st = match resume {
        Some(t) => LoopState::restore(t, model, data, cfg, steps, loud)?,
        None => LoopState::fresh(model, data, cfg)?,
    };
    let mut grads = model.params().zero_grads();
    // One tape for the whole run: its buffers are reused by every step.
    let mut tape = Tape::new(par);
    tape.set_precision(step_precision(tc.precision, loud));
    let bar = progress(loud, steps as u64, "training");
    bar.set_position(st.step as u64);
    let (t0, first_step, traffic_before) = (Instant::now(), st.step, ranks.traffic());
    while st.step < steps {
        let step = st.step + 1;
        // Every rank draws the same global batch and takes its share of the rows.
        let ids = st.batcher.next_batch();
        let batch = if ranks.is_distributed() {
            let comm = ranks.comm();
            data.batch_part(
                &ids[ranks.share(ids.len())],
                &mut st.log_q,
                |pins, drawn| {
                    (
                        comm.all_gather_u32(&pins).data,
                        comm.all_gather_u32(&drawn).data,
                    )
                },
            )
        } else {
            data.batch(ids, &mut st.log_q)
        };
        // The softmax sees the B positives, the B x H hard negatives (an empty slot has
        // log q = +inf, which removes it from the loss), then any uniform corpus negatives,
        // drawn from the seed and the step alone so that a resumed run draws the same (each
        // rank its share of them). Over ranks, each of these three segments is gathered in
        // rank order, which rebuilds the single process's candidates.
        let mut candidates = batch.candidate_pins();
        let mut candidate_log_q = batch.candidate_log_q();
        let mut segments = vec![batch.pins.len(), candidates.len() - batch.pins.len()];
        if tc.uniform_negatives > 0 {
            let n_pins = data.num_pins();
            let drawn = uniform_negatives(n_pins, tc.uniform_negatives, cfg.seed, step as u64);
            let mine = &drawn[ranks.share(drawn.len())];
            candidate_log_q.extend(std::iter::repeat_n(uniform_log_q(n_pins), mine.len()));
            candidates.extend_from_slice(mine);
            segments.push(mine.len());
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
        let stepped = if ranks.is_distributed() {
            let shard = Shard {
                comm: ranks.comm(),
                segments: &segments,
            };
            model.train_shard_step_with(&mut tape, &tb, &shard, &mut grads, &mut st.optimizer, par)
        } else {
            model.train_step_with(&mut tape, &tb, &mut grads, &mut st.optimizer, par)
        };
        let counted = match stepped {
            Ok(loss) => {
                st.sum += f64::from(loss);
                st.count += 1;
                true
            }
            Err(ModelError::NonFinite {
                parameters_untouched: true,
                ..
            }) if tc.on_nonfinite == OnNonFinite::Skip => {
                st.skipped += 1;
                false
            }
            Err(e @ ModelError::NonFinite { .. }) => bail!(
                "training stopped at step {step} of {steps}: {e} (`[train] on_nonfinite = \"skip\"` skips such batches when the parameters are untouched)"
            ),
            Err(e) => return Err(e.into()),
        };
        // A skipped batch adds no point: its window's losses go into the next one.
        if counted && (step % log_interval == 0 || step == steps) {
            let mean = st.sum / st.count as f64;
            st.curve.push(LossPoint { step, loss: mean });
            bar.set_message(format!("loss {mean:.3}"));
            (st.sum, st.count) = (0.0, 0);
        }
        st.step = step;
        bar.inc(1);
        checkpoint_boundary(&st, saver, model, steps, n, &bar)?;
    }
    bar.finish_and_clear();
    if ranks.is_distributed() && loud {
        let t = ranks.traffic().since(&traffic_before);
        let secs = t0.elapsed().as_secs_f64();
        let per_step =
            (t.reduce_bytes + t.gather_bytes) as f64 / (steps - first_step).max(1) as f64;
        eprintln!(
            "{} ranks: {:.1} of {secs:.1} s training in collective operations ({:.0}%), {:.2} MB summed or gathered a step",
            ranks.size(),
            t.seconds,
            100.0 * t.seconds / secs,
            per_step / 1e6
        );
    }
    if st.skipped > 0 && loud {
        eprintln!(
            "{} of {steps} batches skipped for a non-finite loss or gradient",
            st.skipped
        );
    }
    if st.skipped == steps {
        bail!("every one of the {steps} training batches had a non-finite loss or gradient");
    }
    Ok(TrainingSummary {
        steps,
        batch_size: tc.batch_size,
        examples: n,
        loss_curve: st.curve,
    })
}

/// After a step: the periodic checkpoint if one is due, the fault seam, and a stop request
/// (a checkpoint, then [`Interrupted`]).
fn checkpoint_boundary(
    st: &LoopState,
    saver: &Saver<'_>,
    model: &TwoTowerModel,
    steps: usize,
    examples: usize,
    bar: &ProgressBar,
) -> Result<()> {
    let control = saver.session.control;
    let every = saver.every;
    let step = st.step;
    let mut saved = None;
    let ranks = saver.session.ranks;
    let leader = ranks.is_leader();
    let by_steps = every > 0 && step.is_multiple_of(every);
    let mut by_time = saver
        .every_s
        .is_some_and(|s| saver.last_saved.get().elapsed() >= s);
    if ranks.is_distributed() && saver.every_s.is_some() {
        // Rank 0's clock decides, so that the ranks agree on the checkpoint's step.
        by_time = ranks.any(&[by_time && leader])[0];
    }
    if (by_steps || by_time) && step < steps && leader {
        saved = Some(saver.save_step(model, st.snapshot(saver, steps, examples))?);
    }
    control
        .faults
        .after_step(step as u64, control.stop.as_deref());
    let mut stop = control.stop_requested();
    if ranks.is_distributed() {
        // A stop request reaching any rank stops them all, at the same step.
        stop = ranks.any(&[stop])[0];
    }
    if stop {
        let checkpoint = match saved {
            Some(p) => p,
            None if leader => saver.save_step(model, st.snapshot(saver, steps, examples))?,
            None => saver
                .session
                .run_dir
                .join(CHECKPOINT_DIR)
                .join(checkpoint_name(step as u64)),
        };
        bar.abandon();
        return Err(Interrupted {
            step,
            steps,
            checkpoint,
            run_dir: saver.session.run_dir.to_owned(),
        }
        .into());
    }
    Ok(())
}

/// What [`evaluate`] measured: the metrics and every query's recall.
#[derive(Clone, Debug)]
pub(crate) struct Evaluation {
    /// The metrics (`training` left empty).
    pub metrics: Metrics,
    /// Per eval query recall@K of every retriever.
    pub per_query: QueryRecalls,
    /// The model's figures per eval query (`per_query.json`).
    pub model_queries: PerQuery,
}

/// Scores the model and the reference points (popularity, recently seen, random, and with a
/// marketplace the oracle) on the eval queries of both tasks: recall@K, NDCG@K, advertiser
/// recall@K and recall@K per surface per task, and the pin and advertiser coverage of the lists
/// served to the conversion task's queries. With a marketplace, every retriever's conversion
/// lists are also served through the auction `online` ([`crate::online_metrics`]).
pub(crate) fn evaluate(
    model: &TwoTowerModel,
    data: &Dataset,
    market: Option<&Marketplace>,
    cfg: &RunConfig,
    ranks: &Ranks,
    par: Par,
) -> Result<Evaluation> {
    let (seed, online) = (cfg.seed, &cfg.online);
    let k = *RECALL_KS.iter().max().unwrap_or(&1000);
    let corpus = CorpusSearch::embed(model, data.pin_features(), ranks, par)?;
    let n_pins = data.num_pins();
    let eval = data.eval();
    let mut out = Metrics::default();
    let mut per_query = QueryRecalls::default();
    let mut model_queries = PerQuery::default();
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
        let model_top = corpus.top_k(dense_slice(&qe)?, k, par)?;
        let measured = QuerySet::measure(&queries.keys, &queries.relevant, &model_top, &RECALL_KS)?;
        match task {
            Task::Conversion => model_queries.conversion = measured,
            Task::Engagement => model_queries.engagement = measured,
        }
        let pop_top = popularity_top_k(&popularity_counts(data, task), nq, k);
        let seen_top = recently_seen_top_k(data, &queries.keys, &pop_top)?;
        let rand_top = random_top_k(n_pins, nq, k, seed ^ 0x5EED);
        let oracle_top = market.map(|m| {
            let scores = match task {
                Task::Conversion => GroundTruth::expected_conversion_scores,
                Task::Engagement => GroundTruth::expected_click_scores,
            };
            truth_top_k(&m.truth, &queries.keys, k, par, scores)
        });
        // The same oracle's exposure with clicks in place of conversions, on the conversion
        // queries: the best an engagement-only retriever can do there. The gap to the oracle is
        // all that conversion labels can add on this log.
        let click_oracle_top = market.filter(|_| task == Task::Conversion).map(|m| {
            truth_top_k(
                &m.truth,
                &queries.keys,
                k,
                par,
                GroundTruth::expected_click_scores,
            )
        });
        if let Some(top) = &click_oracle_top {
            score_into(
                out.oracle_clicks
                    .get_or_insert_with(RetrieverMetrics::default),
                task,
                queries,
                top,
            )?;
        }
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
            let measured = crate::online::online_metrics(m, &queries.keys, &served, online)?;
            model_queries.online = measured
                .per_query
                .get("model")
                .map(|o| QueryOutcomes::from_outcomes(o));
            out.online = Some(measured);
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
    // With one advertiser (a log without advertisers) every list finds it: nothing to say.
    if data.stats().advertiser_vocab <= 1 {
        out.advertiser.clear();
    }
    if let Some(m) = market.filter(|_| online.traffic_requests > 0) {
        let keys = crate::online::traffic_requests(m, eval, online.traffic_requests)?;
        let (traffic, outcomes) = traffic_ab(model, data, m, &keys, cfg, &corpus, par)?;
        model_queries.traffic = Some(outcomes);
        out.traffic = Some(traffic);
    }
    out.eval = EvalSummary {
        corpus_pins: n_pins,
        ..out.eval
    };
    Ok(Evaluation {
        metrics: out,
        per_query,
        model_queries,
    })
}

/// The top `k` pins for each of `keys` by a ground-truth scorer: an oracle's lists.
pub(crate) fn truth_top_k(
    truth: &GroundTruth,
    keys: &[QueryKey],
    k: usize,
    par: Par,
    scores: fn(&GroundTruth, &QueryKey, &mut [f32]),
) -> TopK {
    top_k_by(
        keys.len(),
        truth.num_pins(),
        k,
        |q, buf| scores(truth, &keys[q], buf),
        par,
    )
}

/// Each pin's count of `task` positives in the training data, ties broken by the other task's:
/// what the popularity baseline ranks by.
fn popularity_counts(data: &Dataset, task: Task) -> Vec<f32> {
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
    counts
}

/// The simulated A/B on traffic: the model's, popularity's, recently seen's and random's
/// conversion top K (`online.candidates`) for each request of `keys` through the auction, with
/// the model's outcome per request for `per_query.json`.
fn traffic_ab(
    model: &TwoTowerModel,
    data: &Dataset,
    market: &Marketplace,
    keys: &[QueryKey],
    cfg: &RunConfig,
    corpus: &CorpusSearch,
    par: Par,
) -> Result<(crate::online::OnlineMetrics, TrafficOutcomes)> {
    let (seed, online) = (cfg.seed, &cfg.online);
    let k = online.candidates.min(data.num_pins());
    let qf = data.query_features(keys);
    let qe = model.embed_queries(&query_input(&qf)?, EMBED_CHUNK, par)?;
    let model_top = corpus.top_k(dense_slice(&qe)?, k, par)?;
    let pop_top = popularity_top_k(&popularity_counts(data, Task::Conversion), keys.len(), k);
    let seen_top = recently_seen_top_k(data, keys, &pop_top)?;
    let rand_top = random_top_k(data.num_pins(), keys.len(), k, seed ^ 0x7AFF);
    let served = [
        ("model", &model_top),
        ("popularity", &pop_top),
        ("recently_seen", &seen_top),
        ("random", &rand_top),
    ];
    let measured = crate::online::online_metrics(market, keys, &served, online)?;
    let outcomes = measured
        .per_query
        .get("model")
        .map(|o| QueryOutcomes::from_outcomes(o))
        .unwrap_or_default();
    Ok((measured, TrafficOutcomes::new(keys, outcomes)))
}

/// The recently-seen baseline: per query, the pins of the user's impressions strictly before
/// the query's moment, most recent first ([`Dataset::recently_seen`]), then popularity's list
/// (`popularity`, one row per query) for the rest of the K slots, skipping pins already listed.
fn recently_seen_top_k(data: &Dataset, keys: &[QueryKey], popularity: &TopK) -> Result<TopK> {
    let k = popularity.k();
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
    Ok(TopK::new(k, ids, scores)?)
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
    let sub = top.select_rows(&keep);
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
