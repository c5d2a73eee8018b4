//! `convcg synth`: the synthetic marketplace, scaled to a number of events, written to disk as
//! a canonical-schema event log with the manifest that regenerates it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use convcg_data::io::{Format, WriteOptions, write_log};
use convcg_data::{Marketplace, RealisedProperties, SynthConfig};

use crate::output::write_atomic;
use crate::progress::{progress, spinner};
use crate::run::Verbosity;

/// The manifest's file name, beside the tables.
pub const MANIFEST_FILE: &str = "synth.toml";

/// Impressions of the pilot run that measures events per impression: enough clicks (a few
/// thousand) for the ratio to be known to about 0.2%.
const PILOT_IMPRESSIONS: u64 = 200_000;

/// What `convcg synth` does: where, how many events, which world.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthRequest {
    /// The dataset directory (created if missing).
    pub out: PathBuf,
    /// About how many events (impressions + engagements + conversions) to write; at least 1.
    pub events: u64,
    /// Seed of the marketplace.
    pub seed: u64,
    /// The world; its `impressions` is replaced by the scaled count.
    pub config: SynthConfig,
    /// Table format.
    pub format: Format,
    /// Files per table (Parquet only).
    pub shards: usize,
}

/// `synth.toml`: the seed and the exact configuration the log was generated from, so that
/// [`Marketplace::generate`] gives the same log and its ground truth again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthManifest {
    /// The seed.
    pub seed: u64,
    /// The events asked for (the log has about as many).
    pub events_requested: u64,
    /// The events written.
    pub events_written: u64,
    /// The configuration, `impressions` scaled.
    pub config: SynthConfig,
}

impl SynthManifest {
    /// Reads `DIR/synth.toml`.
    pub fn read(dir: &Path) -> Result<SynthManifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Generates the marketplace again: the same log, with its ground truth.
    pub fn regenerate(&self) -> Result<Marketplace> {
        Marketplace::generate(&self.config, self.seed, &|_, _| {})
            .context("cannot regenerate the synthetic marketplace")
    }
}

/// What `convcg synth` made.
#[derive(Clone, Debug)]
pub struct SynthSummary {
    /// Realised properties of the marketplace beside their targets.
    pub realised: RealisedProperties,
    /// Impression, engagement and conversion rows written.
    pub events: u64,
    /// Events per impression measured by the pilot run.
    pub events_per_impression: f64,
    /// Seconds spent generating (pilot included).
    pub generate_s: f64,
    /// Seconds spent writing.
    pub write_s: f64,
}

/// The impressions to ask of `base` for about `events` events, and the events per impression
/// measured on a pilot marketplace of the same world (catalogue, users, rates) with fewer
/// impressions: clicks, saves and conversions per impression do not depend on the traffic
/// volume, so only `impressions` is scaled.
pub fn scale_to_events(base: &SynthConfig, events: u64, seed: u64) -> Result<(u64, f64)> {
    if events == 0 {
        bail!("--events must be at least 1");
    }
    let pilot_cfg = SynthConfig {
        impressions: PILOT_IMPRESSIONS,
        ..base.clone()
    };
    let pilot = Marketplace::generate(&pilot_cfg, seed, &|_, _| {})
        .context("cannot generate the pilot marketplace")?;
    let impressions = pilot.log.impressions.len().max(1) as f64;
    let per_impression = pilot.log.num_events() as f64 / impressions;
    let scaled = (events as f64 / per_impression).round().max(1.0) as u64;
    Ok((scaled, per_impression))
}

/// Generates the marketplace scaled to `req.events`, writes its log into `req.out` with
/// `synth.toml` beside it, and (unless quiet) prints the realised properties and timings.
pub fn synth(req: &SynthRequest, verbosity: Verbosity) -> Result<SynthSummary> {
    let loud = verbosity == Verbosity::Normal;
    req.config.validate().context("invalid synth config")?;
    let opts = WriteOptions {
        format: req.format,
        shards: req.shards,
        ..WriteOptions::default()
    };
    // Before the data is made, not after.
    opts.validate().context("invalid --format / --shards")?;
    let t0 = Instant::now();
    let spin = spinner(loud, "measuring events per impression on a pilot run");
    let (impressions, per_impression) = scale_to_events(&req.config, req.events, req.seed)?;
    spin.finish_and_clear();
    let config = SynthConfig {
        impressions,
        ..req.config.clone()
    };
    let bar = progress(loud, 1, "generating marketplace");
    let market = Marketplace::generate(&config, req.seed, &|done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .context("cannot generate the synthetic marketplace")?;
    bar.finish_and_clear();
    let generate_s = t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let spin = spinner(loud, "writing the event log");
    write_log(&req.out, &market.log, &opts)
        .with_context(|| format!("cannot write the event log to {}", req.out.display()))?;
    let events = market.log.num_events() as u64;
    let manifest = SynthManifest {
        seed: req.seed,
        events_requested: req.events,
        events_written: events,
        config,
    };
    write_atomic(
        &req.out.join(MANIFEST_FILE),
        toml::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    spin.finish_and_clear();
    let write_s = t0.elapsed().as_secs_f64();

    let summary = SynthSummary {
        realised: market.realised(),
        events,
        events_per_impression: per_impression,
        generate_s,
        write_s,
    };
    if loud {
        print_summary(req, &market, &summary);
    }
    let conversions = market.log.conversions.len();
    if conversions < FEW_CONVERSIONS {
        eprintln!(
            "warning: the log holds only {conversions} conversions for {} pins and {} users: too few to learn a conversion model from; pass more --events, or a --config with smaller [synth] num_pins and num_users (the catalogue does not shrink with the events)",
            market.log.pins.len(),
            market.log.users.len()
        );
    }
    Ok(summary)
}

/// Fewer conversions than this in a generated log earn a warning.
const FEW_CONVERSIONS: usize = 2_000;

fn print_summary(req: &SynthRequest, market: &Marketplace, s: &SynthSummary) {
    let log = &market.log;
    println!("{}", s.realised);
    println!(
        "impressions scaled to {} for about {} events ({:.4} events per impression in a pilot of \
         {PILOT_IMPRESSIONS} impressions)",
        s.realised.config.impressions, req.events, s.events_per_impression
    );
    println!(
        "events written: {} ({} impressions, {} engagements, {} conversions), {} pins, {} users",
        s.events,
        log.impressions.len(),
        log.engagements.len(),
        log.conversions.len(),
        log.pins.len(),
        log.users.len()
    );
    println!(
        "generated in {:.2} s, written in {:.2} s ({} in {} shard(s)) to {}",
        s.generate_s,
        s.write_s,
        req.format,
        req.shards,
        req.out.display()
    );
}
