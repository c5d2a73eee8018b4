//! Generates the default synthetic marketplace, prints its realised properties, builds the
//! dataset and prints its counts.
//!
//! `cargo run --release -p convcg-data --example synth -- [SEED] [IMPRESSIONS]`

use std::time::Instant;

use convcg_data::{Dataset, DatasetConfig, Marketplace, SynthConfig};

fn main() -> convcg_data::Result<()> {
    let mut args = std::env::args().skip(1);
    let seed = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut cfg = SynthConfig::default();
    if let Some(n) = args.next().and_then(|s| s.parse().ok()) {
        cfg.impressions = n;
    }
    let t = Instant::now();
    let m = Marketplace::generate(&cfg, seed, &|_, _| {})?;
    println!(
        "generated {} events in {:.2?}",
        m.log.num_events(),
        t.elapsed()
    );
    let t = Instant::now();
    let r = m.realised();
    println!("realised in {:.2?}\n{r}", t.elapsed());
    let t = Instant::now();
    let data = Dataset::build(&m.log, Some(&m.true_conversions), &DatasetConfig::default())?;
    println!("dataset built in {:.2?}\n{}", t.elapsed(), data.stats());
    Ok(())
}
