//! W3 of shared/reference-workload.md: a 10-million-event log on disk to every shuffled batch of
//! 2,048 labelled positives (read, attribute, label, hard negatives, log q, batches), through
//! `convcg_data::pipeline::run_pipeline`, the code `convcg pipeline DIR` runs.
//!
//! The log is the directory in `CONVCG_W3_LOG` if set; else a seeded `convcg synth` log of 10M
//! events, written once into `target/w3-log` and reused by later runs (its `synth.toml` says
//! which log it is; a different or unfinished one is written again).

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use convcg::{SynthManifest, SynthRequest, Verbosity};
use convcg_data::SynthConfig;
use convcg_data::io::Format;
use convcg_data::pipeline::{PipelineConfig, run_pipeline};

const EVENTS: u64 = 10_000_000;
const SEED: u64 = 0;

/// The log to run on: `CONVCG_W3_LOG`, else `target/w3-log`, generated if it is not the
/// expected one.
fn log_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONVCG_W3_LOG") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/w3-log");
    // synth.toml is written after the tables, so its presence means a finished log.
    let ready = SynthManifest::read(&dir).is_ok_and(|m| {
        let world = SynthConfig {
            impressions: m.config.impressions,
            ..SynthConfig::default()
        };
        m.seed == SEED && m.events_requested == EVENTS && m.config == world
    });
    if !ready {
        eprintln!(
            "writing a {EVENTS}-event synthetic log to {}",
            dir.display()
        );
        let request = SynthRequest {
            out: dir.clone(),
            events: EVENTS,
            seed: SEED,
            config: SynthConfig::default(),
            format: Format::Parquet,
            shards: 1,
        };
        convcg::synth(&request, Verbosity::Quiet).expect("the W3 log is written");
    }
    dir
}

fn w3(c: &mut Criterion) {
    let dir = log_dir();
    let cfg = PipelineConfig::default();
    let first = run_pipeline(&dir, &cfg, &mut |_| {}).expect("the W3 pipeline runs");
    eprintln!(
        "{}: {} events, {} positives in {} batches; {:.2}M events/s on the first run",
        dir.display(),
        first.events,
        first.positives,
        first.batches,
        first.events_per_s() / 1e6,
    );
    let mut group = c.benchmark_group("w3");
    group.throughput(Throughput::Elements(first.events as u64));
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(15));
    group.bench_function("pipeline", |bench| {
        bench.iter(|| run_pipeline(&dir, &cfg, &mut |_| {}).expect("the W3 pipeline runs"))
    });
    group.finish();
}

criterion_group!(benches, w3);
criterion_main!(benches);
