//! The recipe's claim on a small synthetic marketplace: the full model finds more conversions
//! than the engagement-only retriever (`configs/engagement_only.toml`), by a margin the paired
//! bootstrap interval over the conversion eval queries supports.

use convcg::{Comparison, RunConfig, TrainData, TrainRequest, compare_runs};

use crate::support::SMALL_MARKETPLACE;

/// The suite's small marketplace with conversions about four times as common as the default
/// world's, so that its few thousand engagements per advertiser carry a conversion rate. It
/// trains one pass (`min_steps = 0`), as the default world does, whose pass is thousands of
/// steps.
fn small_world() -> RunConfig {
    let text = format!(
        "seed = 5\nthreads = 2\n{SMALL_MARKETPLACE}\n[train]\nbatch_size = 512\nmin_steps = 0\n"
    );
    RunConfig::from_toml(&text)
        .and_then(|c| c.overridden_by("[synth]\nconversion_bias = -8.0\n"))
        .unwrap()
}

fn train(overlay: &str, dir: &std::path::Path) {
    let cfg = small_world().overridden_by(overlay).unwrap();
    TrainRequest::new(&cfg, TrainData::Synthetic, dir)
        .run()
        .unwrap();
}

fn conversion_recall_at_100(c: &Comparison) -> &convcg::RecallDelta {
    c.recall
        .iter()
        .find(|r| r.task == "conversion" && r.surface == "all" && r.k == 100)
        .expect("conversion recall@100 in both runs")
}

#[test]
fn the_full_model_finds_more_conversions_than_engagement_only() {
    let root = tempfile::tempdir().unwrap();
    let (engagement_only, full) = (root.path().join("a"), root.path().join("b"));
    let overlay = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/engagement_only.toml"),
    )
    .unwrap();
    train(&overlay, &engagement_only);
    train("", &full);
    let c = compare_runs(&engagement_only, &full).unwrap();
    eprintln!("{}", c.table());
    let r = conversion_recall_at_100(&c);
    let interval = r.interval.as_ref().expect("the runs' eval queries pair");
    assert!(
        interval.low > 0.0,
        "full model's conversion recall@100 {:.4} against engagement-only's {:.4}: delta {:+.4}, 95% interval [{:+.4}, {:+.4}]",
        r.b,
        r.a,
        r.delta,
        interval.low,
        interval.high
    );
    let traffic = c.traffic.as_ref().expect("both runs served the traffic");
    let volume = traffic
        .intervals
        .as_ref()
        .expect("the traffic requests pair")
        .conversion_volume
        .as_ref()
        .expect("engagement-only converts some traffic");
    assert!(
        volume.low > 0.0,
        "traffic conversion volume {:+.1}% [{:+.1}%, {:+.1}%]",
        volume.mean,
        volume.low,
        volume.high
    );
}
