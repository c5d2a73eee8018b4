//! Times the training-data rules on a synthetic log at W3's scale: impression lookup, `label`
//! (attribution, labels, weights, one hard negative per positive, log q) on the whole log with
//! the largest impression time as the cutoff, and shuffled batches of 2,048.
//!
//! ```sh
//! cargo run --release -p convcg-data --example label_timing -- 9000000   # impressions
//! ```

use std::time::Instant;

use convcg_data::{LabelConfig, Marketplace, SynthConfig, batches, engagement_impressions, label};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let impressions: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(9_000_000), |s| s.parse())?;
    let cfg = SynthConfig {
        impressions,
        ..SynthConfig::default()
    };
    let t = Instant::now();
    let market = Marketplace::generate(&cfg, 42, &|_, _| {})?;
    let log = &market.log;
    eprintln!(
        "generated {} events in {:.1} s",
        log.num_events(),
        t.elapsed().as_secs_f64()
    );
    let cutoff = log.impressions.ts.iter().copied().max().unwrap_or(0);
    for rep in 0..3 {
        let t0 = Instant::now();
        let eng = engagement_impressions(log)?;
        let t1 = Instant::now();
        let labelled = label(log, &eng, &LabelConfig::default(), cutoff, None)?;
        let t2 = Instant::now();
        let out = batches(&labelled, 2048, 0)?;
        let t3 = Instant::now();
        println!(
            "run {rep}: {} events, {} positives, {} batches | lookup {:.3} s, label {:.3} s, \
             batches {:.3} s, total {:.3} s ({:.1}M events/s)",
            log.num_events(),
            labelled.len(),
            out.len(),
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            (t3 - t0).as_secs_f64(),
            log.num_events() as f64 / (t3 - t0).as_secs_f64() / 1e6,
        );
        if rep == 0 {
            println!("{}", labelled.stats);
        }
    }
    Ok(())
}
