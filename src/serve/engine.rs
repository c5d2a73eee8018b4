//! A trained run opened for answering requests: its model, its feature state and every pin's
//! embedding, computed once. `convcg serve`, `convcg retrieve` and `convcg embed` share it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ndarray::Array2;

use convcg_data::{ColdStart, Dataset, FeatureState, QueryRequest};
use convcg_kernels::Par;
use convcg_model::TwoTowerModel;

use super::ann::{Hnsw, HnswOptions};
use crate::checkpoint::{
    Checkpoint, FEATURE_STATE_FILE, MODEL_FILE, RunSource, read_feature_state, read_file,
};
use crate::config::RunConfig;
use crate::dist::{CorpusSearch, Ranks};
use crate::run::{
    EMBED_CHUNK, Verbosity, dense_slice, feature_tables, generate, in_pool, load, query_input,
};

/// Where a run's feature state comes from, how loudly it is made, and how pins are searched.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// Rebuild the features from this canonical-schema directory instead of the run's saved
    /// feature state or its own source.
    pub data: Option<PathBuf>,
    /// Progress on stderr while the log is read and the features rebuilt.
    pub verbosity: Verbosity,
    /// The index over the pin embeddings.
    pub index: IndexChoice,
}

/// How the top K are found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexChoice {
    /// Exact inner-product search over every pin (`convcg_eval::exact_top_k`).
    Exact,
    /// An approximate HNSW index (`ann`), built when the run is opened.
    Hnsw(HnswOptions),
}

impl IndexChoice {
    /// `exact` or `hnsw`.
    pub fn name(self) -> &'static str {
        match self {
            IndexChoice::Exact => "exact",
            IndexChoice::Hnsw(_) => "hnsw",
        }
    }
}

/// One request: the query, how many pins, and pins never to return.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Who, where, in what context.
    pub query: QueryRequest,
    /// Pins to return (at most the catalogue's size).
    pub k: usize,
    /// Catalogue `pin_id`s to leave out of the answer.
    pub exclude_pin_ids: Vec<i64>,
}

/// One pin of an answer.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Item {
    /// The pin.
    pub pin_id: i64,
    /// Its advertiser.
    pub advertiser_id: i64,
    /// The inner product of the query's and the pin's embeddings.
    pub score: f32,
}

/// The answer to one [`Request`]: pins best first, and what of the request was cold.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The top pins, best first.
    pub items: Vec<Item>,
    /// What the feature state did not know.
    pub cold: ColdStart,
}

/// A trained run loaded for retrieval (see the module docs).
pub struct Retriever {
    cfg: RunConfig,
    model: TwoTowerModel,
    state: FeatureState,
    /// The pins' embeddings, all of them (or, opened over MPI ranks, this rank's share).
    corpus: CorpusSearch,
    hnsw: Option<Hnsw>,
    index: IndexChoice,
    version: String,
    run_dir: PathBuf,
}

impl std::fmt::Debug for Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retriever")
            .field("run_dir", &self.run_dir)
            .field("version", &self.version)
            .field("pins", &self.corpus.held().dim())
            .finish_non_exhaustive()
    }
}

impl Retriever {
    /// Opens `run_dir`: `model.ckpt`, and the feature state `features.state` (or, without one or
    /// with `opts.data`, the features rebuilt from the log with the run's config), checked
    /// against the tables the model was trained with; then embeds every pin.
    ///
    /// # Errors
    /// If the run directory holds no model, a file is unusable, the data is gone, or the
    /// features no longer make the model's tables.
    pub fn open(run_dir: &Path, opts: &OpenOptions) -> Result<Retriever> {
        Retriever::open_on(run_dir, opts, &Ranks::single())
    }

    /// [`Retriever::open`] on every rank of `ranks`, each embedding its share of the pins;
    /// [`Retriever::retrieve`] then merges the ranks' exact top K (every rank must call it with
    /// the same requests). The approximate index needs every pin in one process.
    ///
    /// # Errors
    /// As [`Retriever::open`]; also with the HNSW index over several ranks.
    pub fn open_on(run_dir: &Path, opts: &OpenOptions, ranks: &Ranks) -> Result<Retriever> {
        if ranks.is_distributed() && opts.index != IndexChoice::Exact {
            bail!("the HNSW index needs every pin in one process: use the exact index over ranks");
        }
        let model_path = run_dir.join(MODEL_FILE);
        if !model_path.is_file() {
            bail!(
                "{} holds no {MODEL_FILE}: is it a finished run directory (convcg train --out)?",
                run_dir.display()
            );
        }
        let bytes = read_file(&model_path)?;
        let ckpt = Checkpoint::decode(&bytes, &model_path)?;
        let cfg = RunConfig::from_toml(&ckpt.config_toml)
            .with_context(|| format!("in the config saved in {}", model_path.display()))?;
        let state_path = run_dir.join(FEATURE_STATE_FILE);
        let state = match &opts.data {
            None if state_path.is_file() => read_feature_state(&state_path)?,
            data => rebuild_state(&cfg, &ckpt.source, data.as_deref(), run_dir, opts.verbosity)?,
        };
        let (query_tables, pin_tables) = feature_tables(state.schema());
        if (&query_tables, &pin_tables) != (&ckpt.query_tables, &ckpt.pin_tables) {
            bail!(
                "the features no longer make the tables {} was trained with (vocabularies or dense widths changed)",
                model_path.display()
            );
        }
        let model = ckpt.model(&cfg, &model_path)?;
        let corpus = in_pool(&cfg, |par| {
            CorpusSearch::embed(&model, state.pin_features(), ranks, par)
        })?;
        let pins = corpus.held();
        let threads = cfg.resolved_threads();
        let hnsw = match opts.index {
            IndexChoice::Exact => None,
            IndexChoice::Hnsw(hnsw) => {
                let t0 = std::time::Instant::now();
                let index = Hnsw::build(pins, hnsw, threads, threads)?;
                if opts.verbosity == Verbosity::Normal {
                    eprintln!(
                        "built the HNSW index of {} pins in {:.1} s ({:.0} MiB)",
                        pins.nrows(),
                        t0.elapsed().as_secs_f64(),
                        index.memory_bytes() as f64 / (1 << 20) as f64
                    );
                }
                Some(index)
            }
        };
        let name = run_dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "run".to_owned());
        Ok(Retriever {
            // The file's own CRC-32 (its last 4 bytes) names its contents: a CRC over the
            // whole file, CRC included, is the same constant for every checkpoint.
            version: format!("{name}@{:08x}", crc32fast::hash(&bytes[..bytes.len() - 4])),
            cfg,
            model,
            state,
            corpus,
            hnsw,
            index: opts.index,
            run_dir: run_dir.to_owned(),
        })
    }

    /// The model's name: the run directory's name and the CRC-32 of its `model.ckpt`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The run directory it was opened from.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The run's configuration.
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    /// The feature state requests are featurised with.
    pub fn state(&self) -> &FeatureState {
        &self.state
    }

    /// The index the top K come from.
    pub fn index(&self) -> IndexChoice {
        self.index
    }

    /// Every pin's embedding, a row per catalogue pin (opened over ranks: this rank's
    /// contiguous share).
    pub fn pin_embeddings(&self) -> &Array2<f32> {
        self.corpus.held()
    }

    /// The query tower's output for each request, and what each left cold.
    ///
    /// # Errors
    /// Never in practice (the features are made to the model's tables).
    pub fn embed_queries(
        &self,
        queries: &[QueryRequest],
        par: Par,
    ) -> Result<(Array2<f32>, Vec<ColdStart>)> {
        let (features, cold) = self.state.query_features(queries);
        let embedded = self
            .model
            .embed_queries(&query_input(&features)?, EMBED_CHUNK, par)?;
        Ok((embedded, cold))
    }

    /// The top pins for each request, from the index (exact inner-product search over the
    /// whole catalogue, or the HNSW graph), leaving out each request's excluded pins.
    ///
    /// # Errors
    /// If a request's `k` is 0, or the approximate index fails.
    pub fn retrieve(&self, requests: &[Request], par: Par) -> Result<Vec<Answer>> {
        if let Some(r) = requests.iter().find(|r| r.k == 0) {
            bail!("k must be at least 1 (user {})", r.query.user_id);
        }
        let queries: Vec<QueryRequest> = requests.iter().map(|r| r.query.clone()).collect();
        let (embedded, cold) = self.embed_queries(&queries, par)?;
        let n = self.corpus.total();
        let depth = |r: &Request| r.k.saturating_add(r.exclude_pin_ids.len()).min(n);
        let lists: Vec<(Vec<u32>, Vec<f32>)> = match &self.hnsw {
            Some(hnsw) => requests
                .iter()
                .zip(embedded.rows())
                .map(|(r, q)| {
                    let q = q
                        .to_slice()
                        .ok_or_else(|| anyhow::anyhow!("query embeddings are not row-major"))?;
                    hnsw.search(q, depth(r))
                })
                .collect::<Result<_>>()?,
            None => {
                let deepest = requests.iter().map(depth).max().unwrap_or(0);
                let top = self.corpus.top_k(dense_slice(&embedded)?, deepest, par)?;
                (0..requests.len())
                    .map(|q| (top.row(q).to_vec(), top.row_scores(q).to_vec()))
                    .collect()
            }
        };
        let ids = self.state.pin_ids();
        let advertisers = self.state.pin_advertiser_ids();
        Ok(requests
            .iter()
            .zip(cold)
            .zip(lists)
            .map(|((r, cold), (pins, scores))| {
                let excluded: Vec<u32> = r
                    .exclude_pin_ids
                    .iter()
                    .filter_map(|&p| self.state.pin_index(p))
                    .collect();
                let items = pins
                    .iter()
                    .zip(&scores)
                    .filter(|(p, _)| !excluded.contains(p))
                    .take(r.k)
                    .map(|(&p, &score)| Item {
                        pin_id: ids[p as usize],
                        advertiser_id: advertisers[p as usize],
                        score,
                    })
                    .collect();
                Answer { items, cold }
            })
            .collect())
    }
}

/// The feature state rebuilt from the log: `data` if given, else the run's own source.
fn rebuild_state(
    cfg: &RunConfig,
    source: &RunSource,
    data: Option<&Path>,
    run_dir: &Path,
    verbosity: Verbosity,
) -> Result<FeatureState> {
    let loud = verbosity == Verbosity::Normal;
    let read_dir = |path: &Path| {
        if !path.is_dir() {
            bail!(
                "the data directory {} of this run is gone: restore it, or pass another with --data",
                path.display()
            );
        }
        let (log, market, _) = load(path, cfg, loud)?;
        Ok((log, market))
    };
    let (log, market) = match (data, source) {
        (Some(dir), _) => read_dir(dir)?,
        (None, RunSource::Directory { path }) => read_dir(path)?,
        (None, RunSource::Synthetic) => {
            let mut market = generate(cfg, loud)?;
            (std::mem::take(&mut market.log), Some(market))
        }
        (None, RunSource::Supplied) => bail!(
            "{} was trained on data supplied in memory (convcg ablate) and holds no {FEATURE_STATE_FILE}: pass the data directory with --data",
            run_dir.display()
        ),
    };
    let truths = market.as_ref().map(|m| m.true_conversions.as_slice());
    let dataset = Dataset::build(&log, truths, &cfg.data).context("cannot build the features")?;
    Ok(dataset.feature_state(&log))
}
