//! The policy-aware oracle: ranking pins by expected outcomes per request under the incumbent's
//! exposure policy finds the pins users actually convert on and click in the eval window better
//! than ranking by outcome probability alone, which ignores what the incumbent would show.

use convcg_data::{
    Dataset, DatasetConfig, EvalQueries, GroundTruth, Marketplace, QueryKey, SynthConfig,
};

const K: usize = 100;

/// Mean recall@K of ranking every pin by `score` for each eval query.
fn recall(
    truth: &GroundTruth,
    queries: &EvalQueries,
    score: impl Fn(&GroundTruth, &QueryKey, &mut [f32]),
) -> f64 {
    let mut buf = vec![0f32; truth.num_pins()];
    let mut order: Vec<u32> = Vec::new();
    let mut sum = 0.0;
    for (key, relevant) in queries.keys.iter().zip(&queries.relevant) {
        score(truth, key, &mut buf);
        order.clear();
        order.extend(0..truth.num_pins() as u32);
        order.select_nth_unstable_by(K, |a, b| {
            buf[*b as usize].total_cmp(&buf[*a as usize]).then(a.cmp(b))
        });
        let hits = relevant.iter().filter(|p| order[..K].contains(p)).count();
        sum += hits as f64 / relevant.len() as f64;
    }
    sum / queries.keys.len() as f64
}

#[test]
fn policy_aware_oracle_beats_the_context_free_one() {
    let cfg = SynthConfig {
        num_users: 10_000,
        num_pins: 20_000,
        num_advertisers: 400,
        num_categories: 40,
        num_brands: 1_000,
        num_queries: 400,
        impressions: 1_500_000,
        ..SynthConfig::default()
    };
    let market = Marketplace::generate(&cfg, 3, &|_, _| {}).expect("valid config");
    let data_cfg = DatasetConfig {
        max_eval_queries: 1_500,
        ..DatasetConfig::default()
    };
    let data =
        Dataset::build(&market.log, Some(&market.true_conversions), &data_cfg).expect("a dataset");
    let t = &market.truth;
    let eval = data.eval();
    assert!(
        eval.conversion.keys.len() >= 100,
        "{}",
        eval.conversion.keys.len()
    );
    let conv_old = recall(t, &eval.conversion, |t, k, out| {
        t.conversion_scores(k.user, k.surface, out)
    });
    let conv_new = recall(t, &eval.conversion, GroundTruth::expected_conversion_scores);
    let click_old = recall(t, &eval.engagement, |t, k, out| {
        t.click_scores(k.user, k.surface, out)
    });
    let click_new = recall(t, &eval.engagement, GroundTruth::expected_click_scores);
    println!(
        "recall@{K}: conversion {conv_old:.4} -> {conv_new:.4}, engagement {click_old:.4} -> {click_new:.4}"
    );
    assert!(conv_new > conv_old + 0.05, "{conv_new} vs {conv_old}");
    assert!(click_new > click_old + 0.05, "{click_new} vs {click_old}");
}
