//! The `convcg` command line.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use convcg::{RunConfig, Verbosity};

/// Train and evaluate a two-tower conversion candidate generator.
#[derive(Parser)]
#[command(name = "convcg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the synthetic marketplace, train, evaluate, and print the results table.
    Train {
        /// TOML file overriding any subset of the default config (`convcg config` prints it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of the whole run (overrides the config's).
        #[arg(long)]
        seed: Option<u64>,
        /// Run directory for config.toml and metrics.json (default: a new folder under runs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print nothing but errors.
        #[arg(long)]
        quiet: bool,
    },
    /// Print the default configuration as TOML.
    Config,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Config => print!("{}", RunConfig::default().to_toml()?),
        Command::Train {
            config,
            seed,
            out,
            quiet,
        } => {
            let mut cfg = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    RunConfig::from_toml(&text).with_context(|| format!("in {}", path.display()))?
                }
                None => RunConfig::default(),
            };
            if let Some(seed) = seed {
                cfg.seed = seed;
            }
            let dir = out.unwrap_or_else(|| convcg::default_run_dir(cfg.seed));
            let verbosity = if quiet {
                Verbosity::Quiet
            } else {
                Verbosity::Normal
            };
            convcg::train(&cfg, &dir, verbosity)?;
            if !quiet {
                println!(
                    "wrote {} and {}",
                    dir.join("config.toml").display(),
                    dir.join("metrics.json").display()
                );
            }
        }
    }
    Ok(())
}
