//! ann-compare: measures approximate-nearest-neighbour crates (hnsw_rs, usearch) on synthetic
//! unit vectors, or a trained model's embeddings (`--data npy`), against convcg's exact
//! inner-product top-k.
//!
//! For each engine it times the index build, measures the process's resident-memory growth
//! across the build, and for each ef_search reports recall@k against the exact top k,
//! single-threaded per-query latency (mean, p50, p99) and multi-threaded throughput.
//! See README.md beside Cargo.toml.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use convcg_eval::{TopK, exact_top_k};
use convcg_kernels::Par;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde_json::{Value, json};

const LONG_ABOUT: &str = "\
Compares approximate-nearest-neighbour crates (hnsw_rs, usearch) with convcg's exact \
inner-product top-k on synthetic unit vectors (inner product = cosine).

Data (deterministic for --seed; ChaCha8 streams per chunk of 65,536 rows, so the same for any \
thread count):
  sphere     i.i.d. N(0, 1) coordinates, then L2-normalised: uniform on the unit sphere, no \
structure at all -- the hardest case for graph ANN.
  clustered  --clusters centres drawn uniformly on the unit sphere; each vector picks a centre \
uniformly and adds N(0, (--cluster-spread / sqrt(dim))^2) to every coordinate (so the noise has \
norm about --cluster-spread, against the centre's 1), then is L2-normalised. Defaults: 1,000 \
clusters, spread 0.3.
Queries are drawn from the same distribution as the corpus (fresh draws, not corpus members).

Per engine: the build (parallel insertion on --threads threads) is timed, and the resident set \
(VmRSS) is read before and after it; the peak (VmHWM) is reset just before the build, so \
peak_rss is the process's peak during that build. Per ef_search: every query once on one thread, \
one at a time (latency mean/p50/p99, qps_1thread), then all queries spread over --threads \
threads (qps_threads), and recall@k = mean over queries of |ANN top k & exact top k| / k. Both \
engines raise an ef below k to k.";

#[derive(Parser, Debug)]
#[command(name = "ann-compare", version, about = "Compares ANN crates against exact top-k.", long_about = LONG_ABOUT)]
struct Args {
    /// Corpus vectors.
    #[arg(long)]
    n: usize,
    /// Query vectors.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Dimension.
    #[arg(long, default_value_t = 64)]
    dim: usize,
    /// Neighbours per query (recall@k is measured at this k).
    #[arg(long, default_value_t = 100)]
    k: usize,
    /// Seed of the data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Distribution of corpus and queries.
    #[arg(long, value_enum, default_value_t = Data::Sphere)]
    data: Data,
    /// For --data npy: the corpus, a float32 [rows, dim] .npy (e.g. `convcg embed`'s
    /// pin_embeddings.npy); its first --n rows are indexed.
    #[arg(long)]
    corpus_npy: Option<PathBuf>,
    /// For --data npy: the queries, a float32 [rows, dim] .npy (e.g. user_embeddings.npy); its
    /// first --queries rows are searched.
    #[arg(long)]
    queries_npy: Option<PathBuf>,
    /// Number of clusters for --data clustered.
    #[arg(long, default_value_t = 1000)]
    clusters: usize,
    /// Norm of the per-vector noise around its centre for --data clustered (per-coordinate sd
    /// is this / sqrt(dim)).
    #[arg(long, default_value_t = 0.3)]
    cluster_spread: f32,
    /// Engines to measure.
    #[arg(long, value_enum, default_value_t = EngineChoice::Both)]
    engine: EngineChoice,
    /// Graph degree: hnsw_rs max_nb_connection, usearch connectivity (both keep 2x on layer 0).
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// hnsw_rs ef_construction, usearch expansion_add.
    #[arg(long, default_value_t = 128)]
    ef_construction: usize,
    /// Comma-separated ef_search values (hnsw_rs ef, usearch expansion_search).
    #[arg(long, value_delimiter = ',', default_value = "100,128,256,512")]
    ef_search: Vec<usize>,
    /// Threads for data generation, the exact reference, the build and the throughput runs.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Comma-separated scalar types usearch stores (one index each): f32, f16, i8.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "f32")]
    usearch_scalar: Vec<Scalar>,
    /// hnsw_rs max_layer (its maximum is 16).
    #[arg(long, default_value_t = 16)]
    hnsw_max_layer: usize,
    /// Build even when the memory estimate says an index will not fit in MemAvailable.
    #[arg(long)]
    no_mem_check: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Data {
    Sphere,
    Clustered,
    /// Embeddings read from .npy files (--corpus-npy, --queries-npy).
    Npy,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum EngineChoice {
    #[value(name = "hnsw_rs")]
    HnswRs,
    Usearch,
    Both,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Scalar {
    F32,
    F16,
    I8,
}

impl Scalar {
    fn name(self) -> &'static str {
        match self {
            Scalar::F32 => "f32",
            Scalar::F16 => "f16",
            Scalar::I8 => "i8",
        }
    }
}

/// An index built and ready to query.
trait Ann: Sync {
    /// Sets the search width for the following searches.
    fn set_ef(&mut self, ef: usize);
    /// The ids (best first) and the engine's distances of `query`'s approximate top `k`.
    fn search(&self, query: &[f32], k: usize) -> (Vec<u32>, Vec<f32>);
    /// The engine's own figure of its memory, if it has one.
    fn engine_memory(&self) -> Option<u64>;
    /// Anything else worth recording about the built index.
    fn extra(&self) -> Value {
        Value::Null
    }
}

// ---------------------------------------------------------------------------------------------
// hnsw_rs

mod hnsw_engine {
    use super::*;
    use hnsw_rs::prelude::{DistDot, Hnsw};

    pub struct HnswRs {
        index: Hnsw<'static, f32, DistDot>,
        ef: usize,
    }

    /// Builds with `Hnsw::insert_slice` from the rayon pool (what `parallel_insert_slice` does,
    /// without its `Vec` of n (slice, id) pairs, which would count in the memory growth).
    pub fn build(corpus: &[f32], d: usize, args: &Args) -> HnswRs {
        let n = corpus.len() / d;
        let index = Hnsw::<f32, DistDot>::new(
            args.m,
            n,
            args.hnsw_max_layer,
            args.ef_construction,
            DistDot,
        );
        let progress = Progress::new("hnsw_rs", n);
        corpus.par_chunks_exact(d).enumerate().for_each(|(i, v)| {
            index.insert_slice((v, i));
            progress.tick();
        });
        let mut index = index;
        // The docs ask for this before searching from several threads after a parallel insert
        // (in 0.3.5 nothing reads the flag, but it costs nothing).
        index.set_searching_mode(true);
        HnswRs { index, ef: 0 }
    }

    impl Ann for HnswRs {
        fn set_ef(&mut self, ef: usize) {
            self.ef = ef;
        }
        fn search(&self, query: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
            let found = self.index.search(query, k, self.ef);
            let ids = found.iter().map(|nb| nb.d_id as u32).collect();
            let dist = found.iter().map(|nb| nb.distance).collect();
            (ids, dist)
        }
        fn engine_memory(&self) -> Option<u64> {
            None
        }
        fn extra(&self) -> Value {
            json!({
                "max_level_observed": self.index.get_max_level_observed(),
                "nb_point": self.index.get_nb_point(),
                "distance": self.index.get_distance_name(),
                "simd_feature": cfg!(feature = "hnsw-simd"),
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// usearch

mod usearch_engine {
    use super::*;
    use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

    pub struct Usearch {
        index: Index,
    }

    pub fn build(corpus: &[f32], d: usize, args: &Args, scalar: Scalar) -> Result<Usearch, String> {
        let n = corpus.len() / d;
        let options = IndexOptions {
            dimensions: d,
            metric: MetricKind::IP,
            quantization: match scalar {
                Scalar::F32 => ScalarKind::F32,
                Scalar::F16 => ScalarKind::F16,
                Scalar::I8 => ScalarKind::I8,
            },
            connectivity: args.m,
            expansion_add: args.ef_construction,
            expansion_search: args.ef_search.first().copied().unwrap_or(64),
            multi: false,
        };
        let index = Index::new(&options).map_err(|e| format!("usearch Index::new: {e}"))?;
        // Every concurrent add or search takes one of the reserved thread slots; one more than
        // the rayon workers covers the main thread too.
        index
            .reserve_capacity_and_threads(n, args.threads + 1)
            .map_err(|e| format!("usearch reserve: {e}"))?;
        let progress = Progress::new(&format!("usearch {}", scalar.name()), n);
        corpus
            .par_chunks_exact(d)
            .enumerate()
            .try_for_each(|(i, v)| {
                progress.tick();
                // Always hands over f32: usearch casts to the stored scalar type itself.
                index
                    .add::<f32>(i as u64, v)
                    .map_err(|e| format!("usearch add {i}: {e}"))
            })?;
        Ok(Usearch { index })
    }

    impl Ann for Usearch {
        fn set_ef(&mut self, ef: usize) {
            self.index.change_expansion_search(ef);
        }
        fn search(&self, query: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
            let m = self.index.search::<f32>(query, k).expect("usearch search");
            (m.keys.iter().map(|&key| key as u32).collect(), m.distances)
        }
        fn engine_memory(&self) -> Option<u64> {
            Some(self.index.memory_usage() as u64)
        }
        fn extra(&self) -> Value {
            let m = self.index.memory_stats();
            json!({
                "hardware_acceleration": self.index.hardware_acceleration(),
                "size": self.index.size(),
                "memory_stats": {
                    "graph_allocated": m.graph_allocated,
                    "graph_wasted": m.graph_wasted,
                    "graph_reserved": m.graph_reserved,
                    "vectors_allocated": m.vectors_allocated,
                    "vectors_wasted": m.vectors_wasted,
                    "vectors_reserved": m.vectors_reserved,
                },
            })
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Data

/// Rows per independently seeded chunk of generated data.
const CHUNK_ROWS: usize = 65_536;

/// ChaCha8 streams: one per (role, chunk), so generation is the same for any thread count.
const ROLE_CENTRES: u64 = 1;
const ROLE_CORPUS: u64 = 2;
const ROLE_QUERIES: u64 = 3;

/// `n` unit vectors of dimension `d`: uniform on the sphere, or around `centres` (row-major,
/// unit rows) with per-coordinate noise sd `noise_sd`.
fn generate(n: usize, d: usize, seed: u64, role: u64, centres: Option<(&[f32], f32)>) -> Vec<f32> {
    let mut out = vec![0f32; n * d];
    out.par_chunks_mut(CHUNK_ROWS * d)
        .enumerate()
        .for_each(|(chunk, block)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream((role << 48) | chunk as u64);
            for row in block.chunks_exact_mut(d) {
                match centres {
                    None => {
                        for x in row.iter_mut() {
                            *x = StandardNormal.sample(&mut rng);
                        }
                    }
                    Some((c, sd)) => {
                        let j = rng.random_range(0..c.len() / d);
                        let centre = &c[j * d..(j + 1) * d];
                        for (x, &m) in row.iter_mut().zip(centre) {
                            let z: f32 = StandardNormal.sample(&mut rng);
                            *x = m + sd * z;
                        }
                    }
                }
                let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    row.iter_mut().for_each(|x| *x /= norm);
                }
            }
        });
    out
}

// ---------------------------------------------------------------------------------------------
// Measurement helpers

/// A field of /proc/self/status in bytes (the file gives kB), or 0 where there is none.
/// The first `rows` rows of a C-ordered float32 `.npy` file of `dim` columns.
fn read_npy_rows(path: &std::path::Path, rows: usize, dim: usize) -> Result<Vec<f32>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(format!("{}: not an .npy file", path.display()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])
        .map_err(|_| format!("{}: header is not text", path.display()))?;
    if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
        return Err(format!(
            "{}: not C-ordered float32: {header}",
            path.display()
        ));
    }
    let shape = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!("{}: no shape in {header}", path.display()))?;
    let dims: Vec<usize> = shape
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| format!("{}: shape {shape}", path.display()))
        })
        .collect::<Result<_, _>>()?;
    if dims.len() != 2 || dims[1] != dim || dims[0] < rows {
        return Err(format!(
            "{}: shape {dims:?}, need at least {rows} rows of --dim {dim}",
            path.display()
        ));
    }
    let data = &bytes[start + header_len..];
    Ok(data[..rows * dim * 4]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn proc_status_bytes(field: &str) -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Resets VmHWM to the current VmRSS (Linux: write 5 to /proc/self/clear_refs).
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Hands freed heap memory back to the OS, so that the next engine starts from a clean RSS.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free heap memory; it is always safe to call.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Build progress on stderr, every 10%.
struct Progress {
    label: String,
    n: usize,
    done: AtomicUsize,
    start: Instant,
}

impl Progress {
    fn new(label: &str, n: usize) -> Self {
        Self {
            label: label.to_owned(),
            n,
            done: AtomicUsize::new(0),
            start: Instant::now(),
        }
    }
    fn tick(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let step = (self.n / 10).max(1);
        if done.is_multiple_of(step) {
            eprintln!(
                "  [{}] inserted {done}/{} in {:.1} s",
                self.label,
                self.n,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Which of the SIMD instruction sets that matter here the CPU reports.
fn cpu_flags() -> Vec<&'static str> {
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("flags"))
                .map(|l| l.to_owned())
        })
        .unwrap_or_default();
    let have: Vec<&str> = flags.split_whitespace().collect();
    [
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
    ]
    .into_iter()
    .filter(|f| have.contains(f))
    .collect()
}

/// Version of a crate as resolved in this project's Cargo.lock.
fn locked_version(name: &str) -> String {
    let needle = format!("name = \"{name}\"");
    include_str!("../Cargo.lock")
        .split("[[package]]")
        .find(|block| block.lines().any(|l| l.trim() == needle))
        .and_then(|block| {
            block
                .lines()
                .find_map(|l| l.trim().strip_prefix("version = \""))
        })
        .map_or_else(|| "?".into(), |v| v.trim_end_matches('"').to_owned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn gib(bytes: u64) -> String {
    format!("{:.3}", bytes as f64 / (1u64 << 30) as f64)
}

// ---------------------------------------------------------------------------------------------
// Runs

struct Shared<'a> {
    args: &'a Args,
    corpus: &'a [f32],
    queries: &'a [f32],
    exact: &'a TopK,
}

/// One point of the sweep.
struct Row {
    ef: usize,
    recall: f64,
    recall_min: f64,
    /// Share of the returned pins that score at least the exact k-th score (less 1e-6): recall
    /// that does not count a tie broken otherwise as a miss.
    recall_ties: f64,
    qps_1: f64,
    qps_t: f64,
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    short_lists: usize,
}

/// Recall of one query's list against the exact one.
fn recall_one(ann: &[u32], exact: &[u32], k: usize) -> f64 {
    let mut e: Vec<u32> = exact.to_vec();
    e.sort_unstable();
    let hits = ann
        .iter()
        .take(k)
        .filter(|id| e.binary_search(id).is_ok())
        .count();
    hits as f64 / k as f64
}

fn sweep(engine: &mut dyn Ann, s: &Shared<'_>) -> (Vec<Row>, f64) {
    let (d, k) = (s.args.dim, s.args.k);
    let nq = s.queries.len() / d;
    let k_eff = s.exact.k();
    let mut rows = Vec::new();
    let mut worst_dist_err = 0f64;
    for &ef in &s.args.ef_search {
        engine.set_ef(ef);
        let engine: &dyn Ann = engine;
        // Warm-up: caches, the allocator, lazily built search contexts.
        for q in s.queries.chunks_exact(d).take(nq.min(50)) {
            std::hint::black_box(engine.search(q, k));
        }
        // Single thread, one query at a time.
        let mut lat = Vec::with_capacity(nq);
        let mut recall_sum = 0.0;
        let mut recall_min = f64::INFINITY;
        let mut ties_sum = 0.0;
        let mut short = 0;
        let t0 = Instant::now();
        for (qi, q) in s.queries.chunks_exact(d).enumerate() {
            let t = Instant::now();
            let (ids, dist) = engine.search(q, k);
            lat.push(ms(t.elapsed()));
            let r = recall_one(&ids, s.exact.row(qi), k_eff);
            recall_sum += r;
            recall_min = recall_min.min(r);
            let kth = s
                .exact
                .row_scores(qi)
                .last()
                .copied()
                .unwrap_or(f32::NEG_INFINITY);
            let good = ids
                .iter()
                .take(k_eff)
                .filter(|&&id| {
                    let x = &s.corpus[id as usize * d..(id as usize + 1) * d];
                    let ip: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
                    ip >= kth - 1e-6
                })
                .count();
            ties_sum += good as f64 / k_eff as f64;
            short += usize::from(ids.len() < k_eff);
            // Distance convention: does the engine return 1 - <q, x>?
            if qi < 20 {
                for (&id, &dv) in ids.iter().zip(&dist).take(5) {
                    let x = &s.corpus[id as usize * d..(id as usize + 1) * d];
                    let ip: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
                    worst_dist_err = worst_dist_err.max(f64::from((dv - (1.0 - ip)).abs()));
                }
            }
        }
        let total_1 = t0.elapsed().as_secs_f64();
        // All threads.
        let t1 = Instant::now();
        let checksum: usize = s
            .queries
            .par_chunks_exact(d)
            .with_min_len(1)
            .map(|q| engine.search(q, k).0.len())
            .sum();
        let total_t = t1.elapsed().as_secs_f64();
        std::hint::black_box(checksum);
        let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
        lat.sort_by(f64::total_cmp);
        rows.push(Row {
            ef,
            recall: recall_sum / nq.max(1) as f64,
            recall_min,
            recall_ties: ties_sum / nq.max(1) as f64,
            qps_1: nq as f64 / total_1,
            qps_t: nq as f64 / total_t,
            mean_ms: mean,
            p50_ms: percentile(&lat, 50.0),
            p99_ms: percentile(&lat, 99.0),
            short_lists: short,
        });
    }
    (rows, worst_dist_err)
}

struct Measured {
    engine: String,
    scalar: &'static str,
    build_s: f64,
    rss_before: u64,
    rss_after: u64,
    rss_after_trim: u64,
    peak_rss: u64,
    drop_s: f64,
    engine_mem: Option<u64>,
    extra: Value,
    dist_err: f64,
    rows: Vec<Row>,
}

fn measure<E: Ann, F: FnOnce() -> Result<E, String>>(
    name: &str,
    scalar: &'static str,
    s: &Shared<'_>,
    build: F,
) -> Result<Measured, String> {
    trim_heap();
    let peak_reset = reset_peak_rss();
    let rss_before = proc_status_bytes("VmRSS");
    eprintln!(
        "building {name} ({scalar}) over {} vectors on {} threads...",
        s.corpus.len() / s.args.dim,
        s.args.threads
    );
    let t = Instant::now();
    let mut index = build()?;
    let build_s = t.elapsed().as_secs_f64();
    let rss_after = proc_status_bytes("VmRSS");
    let peak_rss = if peak_reset {
        proc_status_bytes("VmHWM")
    } else {
        0
    };
    // What is left once the allocator hands back the build's freed scratch.
    trim_heap();
    let rss_after_trim = proc_status_bytes("VmRSS");
    eprintln!(
        "  built in {build_s:.1} s; RSS {} -> {} GiB ({} after malloc_trim; peak {} GiB)",
        gib(rss_before),
        gib(rss_after),
        gib(rss_after_trim),
        gib(peak_rss)
    );
    let engine_mem = index.engine_memory();
    let extra = index.extra();
    let (rows, dist_err) = sweep(&mut index, s);
    let t = Instant::now();
    drop(index);
    let drop_s = t.elapsed().as_secs_f64();
    trim_heap();
    Ok(Measured {
        engine: name.to_owned(),
        scalar,
        build_s,
        rss_before,
        rss_after,
        rss_after_trim,
        peak_rss,
        drop_s,
        engine_mem,
        extra,
        dist_err,
        rows,
    })
}

/// Bytes per vector the engines were seen to add on 64-d unit vectors (M = 16, 200k vectors):
/// hnsw_rs 2.3 KB (clustered) to 3.4 KB (sphere), usearch 513 / 384 / 320 B (f32 / f16 / i8).
/// hnsw_rs keeps each point's f32 copy, 16 per-layer `Vec`s and one `Arc` allocation per edge;
/// usearch one contiguous vector tape and a graph of u32 slots.
fn estimated_bytes_per_vector(engine: &str, scalar: Scalar, d: usize, m: usize) -> u64 {
    let (d, m) = (d as u64, m as u64);
    match engine {
        "hnsw_rs" => 4 * d + 800 + 2 * m * 72,
        _ => {
            let width = match scalar {
                Scalar::F32 => 4,
                Scalar::F16 => 2,
                Scalar::I8 => 1,
            };
            width * d + 2 * m * 4 + 150
        }
    }
}

/// Refuses, before any work, a run whose largest index would clearly not fit in memory
/// (this machine has no swap: the kernel's OOM killer would pick a process, maybe not this one).
fn mem_check(args: &Args) -> Result<(), String> {
    let available = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024);
    let Some(available) = available else {
        return Ok(());
    };
    let data = ((args.n + args.queries) * args.dim * 4) as u64;
    let mut engines: Vec<(&str, Scalar)> = Vec::new();
    if matches!(args.engine, EngineChoice::HnswRs | EngineChoice::Both) {
        engines.push(("hnsw_rs", Scalar::F32));
    }
    if matches!(args.engine, EngineChoice::Usearch | EngineChoice::Both) {
        engines.extend(args.usearch_scalar.iter().map(|&s| ("usearch", s)));
    }
    for (engine, scalar) in engines {
        let index = args.n as u64 * estimated_bytes_per_vector(engine, scalar, args.dim, args.m);
        let need = data + index;
        eprintln!(
            "memory estimate for {engine} {}: data {} GiB + index {} GiB = {} GiB (MemAvailable {} GiB)",
            scalar.name(),
            gib(data),
            gib(index),
            gib(need),
            gib(available)
        );
        if need as f64 > 0.9 * available as f64 {
            let msg = format!(
                "{engine} {} at n = {} needs about {} GiB, more than 90% of MemAvailable ({} GiB); \
                 lower --n or --m, or pass --no-mem-check to try anyway",
                scalar.name(),
                args.n,
                gib(need),
                gib(available)
            );
            if args.no_mem_check {
                eprintln!("warning: {msg}");
            } else {
                return Err(msg);
            }
        }
    }
    Ok(())
}

/// Checks the exact reference on a few queries against a plain scan (catches a layout slip):
/// every id it returns must score within rounding of the scan's k-th best.
fn check_reference(exact: &TopK, queries: &[f32], corpus: &[f32], d: usize) -> Result<(), String> {
    let k = exact.k();
    for (qi, q) in queries.chunks_exact(d).take(3).enumerate() {
        let mut scores: Vec<f32> = corpus
            .chunks_exact(d)
            .map(|x| q.iter().zip(x).map(|(a, b)| a * b).sum())
            .collect();
        let kth = *scores
            .select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a))
            .1;
        for &id in exact.row(qi) {
            let x = &corpus[id as usize * d..(id as usize + 1) * d];
            let ip: f32 = q.iter().zip(x).map(|(a, b)| a * b).sum();
            if ip < kth - 1e-5 {
                return Err(format!(
                    "exact reference disagrees with a plain scan on query {qi}: id {id} scores {ip}, k-th best is {kth}"
                ));
            }
        }
    }
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("ann-compare: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let d = args.dim;
    if args.n == 0 || d == 0 || args.k == 0 || args.queries == 0 || args.threads == 0 {
        return Err("--n, --dim, --k, --queries and --threads must be positive".into());
    }
    if args.ef_search.is_empty() {
        return Err("--ef-search needs at least one value".into());
    }
    mem_check(args)?;
    rayon::ThreadPoolBuilder::new()
        .num_threads(args.threads)
        .build_global()
        .map_err(|e| format!("rayon pool: {e}"))?;

    let cpu = cpu_model();
    let flags = cpu_flags();
    let versions = json!({
        "hnsw_rs": locked_version("hnsw_rs"),
        "anndists": locked_version("anndists"),
        "usearch": locked_version("usearch"),
        "numkong": locked_version("numkong"),
    });
    println!(
        "CPU: {cpu} ({} logical CPUs)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("ISA: {}", flags.join(" "));
    println!(
        "crates: hnsw_rs {} (anndists {}, SIMD feature {}), usearch {} (numkong {}); available: {}",
        versions["hnsw_rs"].as_str().unwrap_or("?"),
        versions["anndists"].as_str().unwrap_or("?"),
        if cfg!(feature = "hnsw-simd") {
            "on"
        } else {
            "off"
        },
        versions["usearch"].as_str().unwrap_or("?"),
        versions["numkong"].as_str().unwrap_or("?"),
        usearch::hardware_acceleration_available(),
    );
    println!(
        "data: {:?}, n {}, queries {}, dim {}, k {}, seed {}, threads {}",
        args.data, args.n, args.queries, d, args.k, args.seed, args.threads
    );

    let t = Instant::now();
    let centres = (args.data == Data::Clustered)
        .then(|| generate(args.clusters.max(1), d, args.seed, ROLE_CENTRES, None));
    let spec = centres
        .as_deref()
        .map(|c| (c, args.cluster_spread / (d as f32).sqrt()));
    let (corpus, queries) = if args.data == Data::Npy {
        let (Some(c), Some(q)) = (&args.corpus_npy, &args.queries_npy) else {
            return Err("--data npy needs --corpus-npy and --queries-npy".into());
        };
        (
            read_npy_rows(c, args.n, d)?,
            read_npy_rows(q, args.queries, d)?,
        )
    } else {
        (
            generate(args.n, d, args.seed, ROLE_CORPUS, spec),
            generate(args.queries, d, args.seed, ROLE_QUERIES, spec),
        )
    };
    let gen_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let exact = exact_top_k(&queries, &corpus, d, args.k, Par::rayon(args.threads));
    let exact_s = t.elapsed().as_secs_f64();
    check_reference(&exact, &queries, &corpus, d)?;
    println!(
        "generated in {gen_s:.1} s; exact top-{} of {} queries in {exact_s:.1} s ({:.0} queries/s on {} threads); RSS {} GiB",
        args.k,
        args.queries,
        args.queries as f64 / exact_s,
        args.threads,
        gib(proc_status_bytes("VmRSS"))
    );

    let s = Shared {
        args,
        corpus: &corpus,
        queries: &queries,
        exact: &exact,
    };
    let mut results: Vec<Measured> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    if matches!(args.engine, EngineChoice::HnswRs | EngineChoice::Both) {
        results.push(measure("hnsw_rs", "f32", &s, || {
            Ok(hnsw_engine::build(&corpus, d, args))
        })?);
    }
    if matches!(args.engine, EngineChoice::Usearch | EngineChoice::Both) {
        for &scalar in &args.usearch_scalar {
            match measure("usearch", scalar.name(), &s, || {
                usearch_engine::build(&corpus, d, args, scalar)
            }) {
                Ok(m) => results.push(m),
                Err(e) => {
                    eprintln!("usearch {}: {e}", scalar.name());
                    failures.push(format!("usearch {}: {e}", scalar.name()));
                }
            }
        }
    }

    print!("{}", table(&results, args));
    for f in &failures {
        println!("FAILED {f}");
    }

    if let Some(path) = &args.json {
        let mut rows = Vec::new();
        for m in &results {
            for r in &m.rows {
                rows.push(json!({
                    "engine": m.engine,
                    "scalar": m.scalar,
                    "params": {
                        "m": args.m,
                        "ef_construction": args.ef_construction,
                        "threads": args.threads,
                        "hnsw_max_layer": (m.engine == "hnsw_rs").then_some(args.hnsw_max_layer),
                    },
                    "n": args.n,
                    "dim": d,
                    "k": args.k,
                    "queries": args.queries,
                    "data": format!("{:?}", args.data).to_lowercase(),
                    "seed": args.seed,
                    "build_s": m.build_s,
                    "build_vectors_per_s": args.n as f64 / m.build_s,
                    "rss_before_bytes": m.rss_before,
                    "rss_after_bytes": m.rss_after,
                    "rss_growth_bytes": m.rss_after.saturating_sub(m.rss_before),
                    "rss_growth_after_trim_bytes": m.rss_after_trim.saturating_sub(m.rss_before),
                    "peak_rss": m.peak_rss,
                    "drop_s": m.drop_s,
                    "peak_growth_bytes": m.peak_rss.saturating_sub(m.rss_before),
                    "engine_memory_bytes": m.engine_mem,
                    "ef_search": r.ef,
                    "recall": r.recall,
                    "recall_min": r.recall_min,
                    "recall_ties": r.recall_ties,
                    "short_lists": r.short_lists,
                    "qps_1thread": r.qps_1,
                    "qps_threads": r.qps_t,
                    "mean_ms": r.mean_ms,
                    "p50_ms": r.p50_ms,
                    "p99_ms": r.p99_ms,
                    "max_abs_dist_minus_1_minus_ip": m.dist_err,
                    "engine_info": m.extra,
                }));
            }
        }
        let doc = json!({
            "cpu": cpu,
            "isa": flags,
            "crates": versions,
            "usearch_available_isa": usearch::hardware_acceleration_available(),
            "data": format!("{:?}", args.data).to_lowercase(),
            "clusters": (args.data == Data::Clustered).then_some(args.clusters),
            "cluster_spread": (args.data == Data::Clustered).then_some(args.cluster_spread),
            "n": args.n,
            "dim": d,
            "k": args.k,
            "queries": args.queries,
            "seed": args.seed,
            "threads": args.threads,
            "gen_s": gen_s,
            "exact_s": exact_s,
            "failures": failures,
            "results": rows,
        });
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} engine(s) failed", failures.len()))
    }
}

fn table(results: &[Measured], args: &Args) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:<8} {:<4} {:>3} {:>4} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>7} {:>9} {:>9} {:>7} {:>7} {:>7}",
        "engine",
        "scal",
        "M",
        "efC",
        "build_s",
        "rss+GiB",
        "peakGiB",
        "engGiB",
        "ef",
        "recall",
        "min",
        "qps_1t",
        format!("qps_{}t", args.threads),
        "mean_ms",
        "p50_ms",
        "p99_ms"
    );
    for m in results {
        for (i, r) in m.rows.iter().enumerate() {
            let (build, growth, peak, eng) = if i == 0 {
                (
                    format!("{:.1}", m.build_s),
                    gib(m.rss_after.saturating_sub(m.rss_before)),
                    gib(m.peak_rss),
                    m.engine_mem.map_or("-".into(), gib),
                )
            } else {
                Default::default()
            };
            let _ = writeln!(
                out,
                "{:<8} {:<4} {:>3} {:>4} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7.4} {:>7.2} {:>9.0} {:>9.0} {:>7.3} {:>7.3} {:>7.3}{}",
                m.engine,
                m.scalar,
                args.m,
                args.ef_construction,
                build,
                growth,
                peak,
                eng,
                r.ef,
                r.recall,
                r.recall_min,
                r.qps_1,
                r.qps_t,
                r.mean_ms,
                r.p50_ms,
                r.p99_ms,
                format!(
                    "  ties {:.4}{}",
                    r.recall_ties,
                    if r.short_lists > 0 {
                        format!(" ({} short lists)", r.short_lists)
                    } else {
                        String::new()
                    }
                )
            );
        }
        let _ = writeln!(
            out,
            "  {} {}: build {:.0} vectors/s; RSS growth {:.0} B/vector ({:.0} after malloc_trim); drop {:.2} s; max |dist - (1 - ip)| = {:.2e}",
            m.engine,
            m.scalar,
            args.n as f64 / m.build_s,
            m.rss_after.saturating_sub(m.rss_before) as f64 / args.n as f64,
            m.rss_after_trim.saturating_sub(m.rss_before) as f64 / args.n as f64,
            m.drop_s,
            m.dist_err
        );
    }
    out
}
