//! The approximate index: an HNSW graph over the pin embeddings, from the `usearch` crate
//! (docs/performance.md, "Serving", says why usearch rather than hnsw_rs). Scores are inner
//! products, as the exact engine's: usearch's inner-product distance is `1 - a.b`.

use anyhow::{Context, Result, anyhow, bail};
use ndarray::Array2;
use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

/// How the approximate index is built and searched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswOptions {
    /// Links per node (HNSW's M).
    pub connectivity: usize,
    /// Candidates kept while inserting (ef_construction).
    pub expansion_add: usize,
    /// Candidates kept while searching (ef_search); a search for more pins than this keeps as
    /// many candidates as pins asked for.
    pub expansion_search: usize,
}

impl Default for HnswOptions {
    fn default() -> HnswOptions {
        HnswOptions {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 128,
        }
    }
}

/// An HNSW index whose keys are catalogue indices.
pub(crate) struct Hnsw {
    index: Index,
}

impl Hnsw {
    /// Inserts every row of `pins` (key = row), `threads` at a time; `searchers` is how many
    /// threads may search at once afterwards.
    pub(crate) fn build(
        pins: &Array2<f32>,
        opts: HnswOptions,
        threads: usize,
        searchers: usize,
    ) -> Result<Hnsw> {
        if opts.connectivity < 2 || opts.expansion_add == 0 || opts.expansion_search == 0 {
            bail!(
                "the HNSW settings must be positive, with at least 2 links per node: got {opts:?}"
            );
        }
        let index = Index::new(&IndexOptions {
            dimensions: pins.ncols(),
            metric: MetricKind::IP,
            quantization: ScalarKind::F32,
            connectivity: opts.connectivity,
            expansion_add: opts.expansion_add,
            expansion_search: opts.expansion_search,
            multi: false,
        })
        .map_err(|e| anyhow!("cannot create the HNSW index: {e}"))?;
        let threads = threads.max(1);
        // Each concurrent insertion or search holds one of the reserved thread slots; one more
        // covers a caller outside the pools.
        index
            .reserve_capacity_and_threads(pins.nrows(), threads.max(searchers) + 1)
            .map_err(|e| {
                anyhow!(
                    "cannot reserve the HNSW index for {} pins: {e}",
                    pins.nrows()
                )
            })?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .context("cannot start the index-building threads")?;
        pool.install(|| {
            pins.outer_iter()
                .into_par_iter()
                .enumerate()
                .try_for_each(|(p, row)| {
                    let row = row
                        .to_slice()
                        .ok_or_else(|| anyhow!("pin embeddings are not row-major"))?;
                    index
                        .add(p as u64, row)
                        .map_err(|e| anyhow!("cannot add pin {p} to the HNSW index: {e}"))
                })
        })?;
        Ok(Hnsw { index })
    }

    /// The approximate top `k` of `query`: catalogue indices and inner products, best first.
    pub(crate) fn search(&self, query: &[f32], k: usize) -> Result<(Vec<u32>, Vec<f32>)> {
        let found = self
            .index
            .search(query, k)
            .map_err(|e| anyhow!("the HNSW search failed: {e}"))?;
        let ids = found.keys.iter().map(|&key| key as u32).collect();
        let scores = found.distances.iter().map(|d| 1.0 - d).collect();
        Ok((ids, scores))
    }

    /// The bytes the index holds (graph and vectors).
    pub(crate) fn memory_bytes(&self) -> usize {
        self.index.memory_usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Unit rows around a few centres, as trained embeddings cluster.
    fn clustered(n: usize, d: usize, seed: u64) -> Array2<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> = (0..20)
            .map(|_| (0..d).map(|_| rng.random_range(-1.0..1.0)).collect())
            .collect();
        let mut a = Array2::from_shape_fn((n, d), |(i, j)| {
            centres[i % 20][j] + 0.3 * rng.random_range(-1.0f32..1.0)
        });
        for mut row in a.rows_mut() {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.mapv_inplace(|x| x / norm);
        }
        a
    }

    #[test]
    fn hnsw_finds_nearly_all_of_the_exact_top_k_with_inner_product_scores() {
        let pins = clustered(4000, 16, 1);
        let queries = clustered(50, 16, 2);
        let index = Hnsw::build(&pins, HnswOptions::default(), 2, 2).unwrap();
        assert!(index.memory_bytes() > 4000 * 16 * 4);
        let k = 20;
        let mut found = 0;
        for q in queries.rows() {
            let q = q.to_slice().unwrap();
            let (ids, scores) = index.search(q, k).unwrap();
            assert_eq!(ids.len(), k);
            for (&p, &s) in ids.iter().zip(&scores) {
                let ip: f32 = pins.row(p as usize).iter().zip(q).map(|(a, b)| a * b).sum();
                assert!((ip - s).abs() < 1e-5, "score {s}, inner product {ip}");
            }
            assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first");
            let mut exact: Vec<(f32, u32)> = pins
                .rows()
                .into_iter()
                .enumerate()
                .map(|(p, r)| (r.iter().zip(q).map(|(a, b)| a * b).sum(), p as u32))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            found += exact[..k].iter().filter(|e| ids.contains(&e.1)).count();
        }
        let recall = found as f64 / (50 * k) as f64;
        assert!(recall > 0.95, "recall@{k} {recall}");
    }

    #[test]
    fn degenerate_settings_are_refused() {
        let pins = clustered(10, 4, 3);
        let bad = HnswOptions {
            connectivity: 1,
            ..HnswOptions::default()
        };
        let e = Hnsw::build(&pins, bad, 1, 1).err().unwrap().to_string();
        assert!(e.contains("at least 2 links"), "{e}");
    }
}
