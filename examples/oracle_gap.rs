//! What the synthetic marketplace's ground truth says about the ablation ladder's choices, with
//! no model trained.
//!
//! ```sh
//! cargo run --release --example oracle_gap
//! cargo run --release --example oracle_gap -- configs/engagement_only.toml \
//!     --set 'synth.rho = 0.3' --set 'synth.conversion_affinity_scale = 8.0'
//! ```
//!
//! Arguments are TOML files or `--set 'TABLE.KEY = VALUE'` overrides, applied in order on top of
//! `convcg ablate`'s configuration (`ablation_config`); the marketplace is the one the ladder
//! trains on (the config's seed). It prints:
//!
//! 1. **The ceilings.** Conversion recall@100 and @1000 on the eval queries of the policy-aware
//!    oracle (true expected conversions per request) and of the *oracle of clicks* (true expected
//!    clicks per request under the same exposure): the best a retriever that learns from
//!    engagement alone can do. Their gap bounds what any use of conversion labels can add.
//! 2. **Where hard negatives sit in the truth's ranking.** For a sample of training rows, the
//!    rank among all pins, by the oracle's expected conversions for the row's own query, of the
//!    row's positive, of its hard negatives, and of another row's positive (what an in-batch
//!    negative is): a loss that pushes a pin down fights the oracle when that pin ranks high.
//! 3. **What click-duration weights carry.** Over engagement rows from clicks: the correlation of
//!    a row's weight with the truth's conversion affinity of its (user, pin), and the effective
//!    sample size `(Σw)² / Σw²` as a share of the rows (the variance the weights cost).

use anyhow::{Context, Result, bail};
use convcg::{RunConfig, ablation_config};
use convcg_data::testing::pearson;
use convcg_data::{Dataset, GroundTruth, Marketplace, QueryKey};
use convcg_eval::{Par, recall_at_k, top_k_by};
use rayon::prelude::*;

/// Training rows sampled for the rank statistics.
const SAMPLE_ROWS: usize = 2_000;

fn main() -> Result<()> {
    let mut cfg: RunConfig = ablation_config();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let text = if a == "--set" {
            let kv = args.next().context("--set needs 'TABLE.KEY = VALUE'")?;
            let Some((table, rest)) = kv.split_once('.') else {
                bail!("--set {kv}: expected 'TABLE.KEY = VALUE'");
            };
            format!("[{table}]\n{rest}\n")
        } else {
            std::fs::read_to_string(&a).with_context(|| format!("cannot read {a}"))?
        };
        cfg = cfg
            .overridden_by(&text)
            .with_context(|| format!("in {a}"))?;
    }
    let market = Marketplace::generate(&cfg.synth, cfg.seed, &|_, _| {})?;
    let data = Dataset::build(&market.log, Some(&market.true_conversions), &cfg.data)?;
    let truth = &market.truth;
    let r = market.realised();
    println!(
        "marketplace: rho {:.2} (realised {:.3}), conversion_bias {}, conversion_affinity_scale {}, \
         advertiser_quality_sd {}; true conversions per click {:.4}",
        cfg.synth.rho,
        r.factor_correlation,
        cfg.synth.conversion_bias,
        cfg.synth.conversion_affinity_scale,
        cfg.synth.advertiser_quality_sd,
        r.true_conversions_per_click
    );

    // 1. Ceilings.
    let conv = &data.eval().conversion;
    println!(
        "\n1. ceilings on {} conversion eval queries",
        conv.keys.len()
    );
    let conversion_recall = |scores: fn(&GroundTruth, &QueryKey, &mut [f32])| {
        let top = top_k_by(
            conv.keys.len(),
            truth.num_pins(),
            1000,
            |q, buf| scores(truth, &conv.keys[q], buf),
            Par::rayon(rayon::current_num_threads()),
        );
        recall_at_k(&top, &conv.relevant, &[100, 1000])
    };
    let oracle = conversion_recall(GroundTruth::expected_conversion_scores)?;
    let clicks = conversion_recall(GroundTruth::expected_click_scores)?;
    for k in [100, 1000] {
        let key = format!("recall@{k}");
        let (o, c) = (oracle.recall[&key], clicks.recall[&key]);
        println!(
            "   recall@{k}: oracle {o:.4}, oracle of clicks {c:.4}: conversion labels add at most \
             {:+.4} ({:+.1}%)",
            o - c,
            100.0 * (o / c - 1.0)
        );
    }

    // 2. Hard negatives in the truth's ranking.
    let train = data.train();
    let with_hard: Vec<usize> = (0..train.len())
        .filter(|&i| !train[i].hard_negatives.is_empty())
        .collect();
    if with_hard.is_empty() {
        bail!("no training row has a hard negative");
    }
    let step = (with_hard.len() / SAMPLE_ROWS).max(1);
    let sample: Vec<usize> = with_hard.iter().step_by(step).copied().collect();
    let ranks: Vec<(u32, Vec<u32>, u32)> = sample
        .par_iter()
        .enumerate()
        .map(|(j, &i)| {
            let e = &train[i];
            let mut buf = vec![0f32; truth.num_pins()];
            truth.expected_conversion_scores(&e.key, &mut buf);
            let rank = |p: u32| rank_of(&buf, p);
            // Another sampled row's positive: an in-batch negative for this row.
            let other = train[sample[(j + sample.len() / 2) % sample.len()]].pin;
            let hard = e
                .hard_negatives
                .as_slice()
                .iter()
                .map(|&p| rank(p))
                .collect();
            (rank(e.pin), hard, rank(other))
        })
        .collect();
    let positives: Vec<u32> = ranks.iter().map(|r| r.0).collect();
    let hard: Vec<u32> = ranks.iter().flat_map(|r| r.1.iter().copied()).collect();
    let others: Vec<u32> = ranks.iter().map(|r| r.2).collect();
    println!(
        "\n2. rank by the oracle's expected conversions for the row's own query, of {} pins \
         ({} training rows with hard negatives, every {step}th)",
        truth.num_pins(),
        sample.len()
    );
    println!(
        "   {:<26}{:>8}{:>12}{:>12}{:>14}",
        "pin", "count", "in top 100", "in top 1000", "median rank"
    );
    for (name, xs) in [
        ("the row's positive", &positives),
        ("its hard negatives", &hard),
        ("another row's positive", &others),
    ] {
        let (t100, t1000, med) = rank_summary(xs);
        println!(
            "   {name:<26}{:>8}{:>11.1}%{:>11.1}%{med:>14}",
            xs.len(),
            100.0 * t100,
            100.0 * t1000
        );
    }

    // 3. Click-duration weights.
    let clicks: Vec<(f64, f64)> = train
        .iter()
        .filter(|e| e.label_engagement && e.weight_engagement > 0.0)
        .map(|e| {
            let a = truth.conversion_affinity(e.key.user, e.pin);
            (f64::from(e.weight_engagement), f64::from(a))
        })
        .collect();
    let w: Vec<f64> = clicks.iter().map(|c| c.0).collect();
    let a: Vec<f64> = clicks.iter().map(|c| c.1).collect();
    let sum: f64 = w.iter().sum();
    let sum2: f64 = w.iter().map(|x| x * x).sum();
    println!(
        "\n3. click-duration weights over {} engagement rows: correlation with the truth's \
         conversion affinity {:+.3}; effective sample size {:.1}% of the rows",
        w.len(),
        pearson(&w, &a),
        100.0 * sum * sum / sum2 / w.len() as f64
    );
    Ok(())
}

/// 0-based rank of pin `p` when pins are sorted by decreasing score, ties to the smaller index.
fn rank_of(scores: &[f32], p: u32) -> u32 {
    let s = scores[p as usize];
    scores
        .iter()
        .enumerate()
        .filter(|&(i, &x)| x > s || (x == s && (i as u32) < p))
        .count() as u32
}

/// Share in the top 100, share in the top 1000, and the median of 0-based ranks.
fn rank_summary(ranks: &[u32]) -> (f64, f64, u32) {
    let n = ranks.len() as f64;
    let mut sorted = ranks.to_vec();
    sorted.sort_unstable();
    (
        ranks.iter().filter(|&&r| r < 100).count() as f64 / n,
        ranks.iter().filter(|&&r| r < 1000).count() as f64 / n,
        sorted[sorted.len() / 2],
    )
}
