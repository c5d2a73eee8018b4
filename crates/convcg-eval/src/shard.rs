//! Top-k over a corpus split into consecutive shards (the ranks of a distributed run each
//! holding one): every shard's exact top-k, merged.

use crate::error::{Error, Result};
use crate::select::best_first;
use crate::topk::TopK;

/// The top `k` of a corpus split into consecutive shards, from each shard's own top `k` of the
/// same queries: `parts[s]` lists shard `s`'s items by their ids within the shard, and shard
/// `s` starts at corpus row `offsets[s]`.
///
/// Returns [`exact_top_k`](crate::exact_top_k)'s lists for the whole corpus
/// (`min(k, corpus rows)` per query, best first, ties by smaller id) whenever each part is
/// `exact_top_k` of its shard: a score depends only on its query and corpus row, so the shards
/// score every row as the whole corpus would, and the best `k` of the whole are among the best
/// `k` of their shards. (Without AVX2, scores come from a GEMM whose rounding may differ with
/// the shard's size; near-ties may then order differently.)
///
/// # Errors
/// [`Error::ShardsDoNotFit`] when the parts hold different numbers of queries, `offsets` is not
/// one per part, or a part's ids reach past the next shard's start; [`Error::MalformedTopK`] for
/// a malformed part.
pub fn merge_top_k(parts: &[TopK], offsets: &[u32], k: usize) -> Result<TopK> {
    let invalid = Error::ShardsDoNotFit;
    if parts.len() != offsets.len() {
        return Err(invalid(format!(
            "{} parts but {} offsets",
            parts.len(),
            offsets.len()
        )));
    }
    let nq = parts.iter().map(TopK::num_queries).find(|&n| n > 0);
    let nq = nq.unwrap_or(0);
    for (s, part) in parts.iter().enumerate() {
        part.check_shape()?;
        if part.k() > 0 && part.num_queries() != nq {
            return Err(invalid(format!(
                "part {s} holds {} queries, another {nq}",
                part.num_queries()
            )));
        }
        if let (Some(&end), Some(&max)) = (offsets.get(s + 1), part.ids().iter().max())
            && u64::from(offsets[s]) + u64::from(max) >= u64::from(end)
        {
            return Err(invalid(format!(
                "part {s} holds id {max}, past its shard (rows {} to {end})",
                offsets[s]
            )));
        }
    }
    // A part of fewer than k items per query holds its whole shard.
    let out_k = parts.iter().map(TopK::k).sum::<usize>().min(k);
    let mut ids = Vec::with_capacity(nq * out_k);
    let mut scores = Vec::with_capacity(nq * out_k);
    let mut pool: Vec<(f32, u32)> = Vec::new();
    for q in 0..nq {
        pool.clear();
        for (part, &offset) in parts.iter().zip(offsets) {
            if part.k() == 0 {
                continue;
            }
            let row = part.row(q).iter().zip(part.row_scores(q));
            pool.extend(row.map(|(&id, &score)| (score, offset + id)));
        }
        pool.sort_unstable_by(best_first);
        for &(score, id) in &pool[..out_k] {
            ids.push(id);
            scores.push(score);
        }
    }
    TopK::new(out_k, ids, scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact::exact_top_k;
    use crate::testing::unit_normal;
    use convcg_kernels::Par;

    /// Shards of awkward sizes (one smaller than k, one empty), with exact ties across shards:
    /// the merged lists are the whole corpus's, ids and scores bit for bit.
    #[test]
    fn merged_shards_are_the_whole_corpus_top_k() {
        let d = 64;
        let (nq, n) = (70, 1000);
        let queries = unit_normal(nq, d, 3);
        let mut corpus = unit_normal(n, d, 4);
        // Rows 10 and 900 tie exactly, in different shards.
        let copy = corpus[10 * d..11 * d].to_vec();
        corpus[900 * d..901 * d].copy_from_slice(&copy);
        for k in [1, 7, 100, 1200] {
            let whole = exact_top_k(&queries, &corpus, d, k, Par::Seq);
            for bounds in [vec![0, 500, 1000], vec![0, 5, 5, 640, 1000], vec![0, 1000]] {
                let parts: Vec<TopK> = bounds
                    .windows(2)
                    .map(|w| exact_top_k(&queries, &corpus[w[0] * d..w[1] * d], d, k, Par::Seq))
                    .collect();
                let offsets: Vec<u32> = bounds[..bounds.len() - 1]
                    .iter()
                    .map(|&b| b as u32)
                    .collect();
                let merged = merge_top_k(&parts, &offsets, k).unwrap();
                assert_eq!(merged.k(), whole.k(), "k {k} {bounds:?}");
                assert_eq!(merged.ids(), whole.ids(), "k {k} {bounds:?}");
                let bits = |t: &TopK| t.scores().iter().map(|s| s.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&merged), bits(&whole), "k {k} {bounds:?}");
            }
        }
    }

    #[test]
    fn parts_that_do_not_fit_are_refused() {
        let d = 4;
        let q = unit_normal(3, d, 1);
        let c = unit_normal(10, d, 2);
        let a = exact_top_k(&q, &c, d, 5, Par::Seq);
        let b = exact_top_k(&q[..2 * d], &c, d, 5, Par::Seq);
        assert!(merge_top_k(std::slice::from_ref(&a), &[0, 10], 5).is_err());
        assert!(merge_top_k(&[a.clone(), b], &[0, 10], 5).is_err());
        // Shard 0's ids reach row 9, past shard 1's start at 4.
        assert!(merge_top_k(&[a.clone(), a], &[0, 4], 5).is_err());
    }
}
