//! The `convcg` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use convcg::dist::Ranks;
use convcg::{
    Interrupted, RunConfig, RunControl, SynthRequest, TrainData, TrainRequest, Verbosity,
};
use convcg_data::SynthConfig;
use convcg_data::io::Format;

/// Train and evaluate a two-tower conversion candidate generator.
#[derive(Parser)]
#[command(name = "convcg", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate on the synthetic marketplace (or, with --data, on an event log in the
    /// canonical schema), and print the results table.
    Train {
        /// Canonical-schema dataset directory to train on; its dataset.toml sets `[data]` keys,
        /// which --config's `[data]` overrides key by key.
        #[arg(long)]
        data: Option<PathBuf>,
        /// TOML file overriding any subset of the default config (`convcg config` prints it).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of the whole run (overrides the config's).
        #[arg(long)]
        seed: Option<u64>,
        /// Run directory for config.toml, checkpoints, model.ckpt and metrics.json (default: a
        /// new folder under runs/). A directory that holds another run is refused.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace the run that --out holds: its files, checkpoints and report/ are deleted
        /// first (nothing else in the directory is touched).
        #[arg(long)]
        force: bool,
        /// Continue the run in this directory from its newest usable checkpoint (with its own
        /// config and data; the result equals an uninterrupted run's), or evaluate its model if
        /// training had finished.
        #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["data", "config", "seed", "out", "force"])]
        resume: Option<PathBuf>,
        /// Print nothing but errors.
        #[arg(long)]
        quiet: bool,
        /// Train data-parallel over the ranks of an MPI job, started by `mpirun -np N convcg
        /// train --distributed --out DIR ...` (scripts/mpirun.sh): each rank trains its share of
        /// every batch and rank 0 writes DIR. Needs convcg built with `--features mpi`.
        #[arg(long)]
        distributed: bool,
    },
    /// Write a finished run's tower weights for other frameworks: OUT/towers.safetensors
    /// (float32 tensors named as in the checkpoint; PyTorch loads it with
    /// `safetensors.torch.load_file`) and OUT/towers.json (the towers' settings, input features
    /// and every tensor's shape).
    Export {
        /// The run directory (holding model.ckpt).
        run_dir: PathBuf,
        /// The format; safetensors is the only one.
        #[arg(long, value_parser = ["safetensors"], default_value = "safetensors")]
        format: String,
        /// Output directory (default: RUN_DIR/export).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the configuration a run would use, as TOML with each key's meaning and allowed
    /// values as comments: the defaults, or with --data those of that dataset directory (its
    /// dataset.toml applied). Save it, edit it, and pass it back with --config.
    Config {
        /// Dataset directory whose dataset.toml the printed configuration includes.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Measure how much the synthetic marketplace lets conversions matter, with no model trained:
    /// conversion recall@K of the oracle against the oracle of clicks (the engagement-only
    /// ceiling), and both in the simulated A/B on traffic.
    Headroom {
        /// TOML file overriding any subset of the default config (as for `train`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seed of the marketplace (overrides the config's).
        #[arg(long)]
        seed: Option<u64>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Train a ladder of model variants, each with several seeds, on the same data, and print
    /// and write (ablation.json, ablation.md) what each change bought.
    Ablate {
        /// Which ladder: `pinterest` (the source papers' history, one change at a time) or `cross` (the
        /// DCN v2 cross-layer kinds on the full model).
        #[arg(long, value_enum, default_value_t = convcg::Ladder::Pinterest)]
        ladder: convcg::Ladder,
        /// Canonical-schema dataset directory (default: the ablation-sized synthetic marketplace).
        #[arg(long)]
        data: Option<PathBuf>,
        /// TOML file overriding any subset of the full model's configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seeds per variant: 1, 2, ... N.
        #[arg(long, default_value_t = 3)]
        seeds: u64,
        /// Correlation of the click and conversion latent factors of the synthetic marketplace.
        #[arg(long)]
        rho: Option<f64>,
        /// Output directory (default: a new folder under runs/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print nothing but the table and errors.
        #[arg(long)]
        quiet: bool,
    },
    /// Convert a real slice of shared/data/ (taobao, tmall or trivago) into a canonical-schema
    /// dataset directory, with dataset.toml and the id dictionaries beside the tables.
    Import {
        /// Which slice: taobao, tmall or trivago.
        source: convcg_data::import::Source,
        /// The slice's folder or file.
        src: PathBuf,
        /// Dataset directory to write (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Table format: parquet or csv.
        #[arg(long, default_value_t = Format::Parquet)]
        format: Format,
    },
    /// Generate the synthetic marketplace scaled to about N events and write it as an event log
    /// (with synth.toml, which regenerates it and its ground truth).
    Synth {
        /// Dataset directory for the tables and synth.toml (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// About how many events (impressions + engagements + conversions) to write.
        #[arg(long)]
        events: u64,
        /// Seed of the marketplace.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Table format: parquet or csv.
        #[arg(long, default_value_t = Format::Parquet)]
        format: Format,
        /// TOML file of synthetic-marketplace keys overriding the defaults (`[synth]` of
        /// `convcg config`, without the header); `impressions` is set from --events.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Parquet files per table (more than 1: a folder of part files per table).
        #[arg(long, default_value_t = 1)]
        shards: usize,
        /// Print nothing but errors.
        #[arg(long)]
        quiet: bool,
    },
    /// Compare run B against run A: the model's simulated online lifts (+x% conversion volume,
    /// +y% impression-to-conversion, +z% RoAS) and its recall@K deltas per task and surface.
    Compare {
        /// Run A (the reference): a run directory or its metrics.json.
        run_a: PathBuf,
        /// Run B: a run directory or its metrics.json.
        run_b: PathBuf,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the embeddings of every pin and every user of a trained run: pins.parquet and
    /// users.parquet (id, embedding), and the same as .npy (float32 rows, int64 ids) for numpy
    /// and FAISS. A user's embedding is its home-feed query after the log's end.
    Embed {
        /// The run directory (it holds model.ckpt).
        run_dir: PathBuf,
        /// Folder for the files.
        #[arg(long)]
        out: PathBuf,
        /// Rebuild the features from this canonical-schema directory instead of the run's own
        /// source (needed for runs of convcg ablate, or when the data moved).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Print nothing but errors.
        #[arg(long)]
        quiet: bool,
    },
    /// Top-K pins for given users from a trained run, by exact search over the whole catalogue:
    /// CSV user_id,rank,pin_id,score on stdout or into --out. A user the run never saw is served
    /// cold (a warning names it).
    Retrieve {
        /// The run directory (it holds model.ckpt).
        run_dir: PathBuf,
        /// User ids, one per line (an optional user_id header; # starts a comment).
        #[arg(long)]
        users: PathBuf,
        /// Pins per user.
        #[arg(long, default_value_t = 100)]
        k: usize,
        /// The surface of the requests: homefeed, related or search.
        #[arg(long, default_value = "homefeed")]
        surface: convcg_data::Surface,
        /// The pin being viewed, by pin_id (related pins).
        #[arg(long)]
        context_pin: Option<i64>,
        /// The search query's id (search).
        #[arg(long)]
        query: Option<i64>,
        /// Leave out the pins each user engaged with most recently (its recent-pins bag).
        #[arg(long)]
        exclude_seen: bool,
        /// Write the CSV here (atomically) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rebuild the features from this canonical-schema directory instead of the run's saved
        /// features.state (or its own source, for a run without one).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Search over the ranks of an MPI job (`scripts/mpirun.sh N retrieve --distributed
        /// ...`): each rank embeds and scores its share of the pins, and rank 0 writes the
        /// merged lists. Needs convcg built with `--features mpi`.
        #[arg(long)]
        distributed: bool,
    },
    /// Answer retrieval requests over HTTP: POST /v1/retrieve (JSON), GET /healthz,
    /// GET /metrics (Prometheus), POST /admin/reload (token in CONVCG_ADMIN_TOKEN); SIGHUP
    /// reloads the run directory. README: "Serving".
    Serve {
        /// The run directory (it holds model.ckpt and features.state).
        run_dir: PathBuf,
        /// IP:PORT to listen on (port 0: any free port; the one taken is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// The largest k a request may ask for.
        #[arg(long, default_value_t = 1000)]
        max_k: usize,
        /// How pins are searched: exact (every pin scored) or hnsw (an approximate graph index,
        /// built at start and at each reload).
        #[arg(long, default_value = "exact", value_parser = ["exact", "hnsw"])]
        index: String,
        /// HNSW: links per node (M).
        #[arg(long, default_value_t = 16)]
        hnsw_m: usize,
        /// HNSW: candidates kept while building (ef_construction).
        #[arg(long, default_value_t = 128)]
        ef_construction: usize,
        /// HNSW: candidates kept while searching (ef_search; at least k are always kept).
        #[arg(long, default_value_t = 128)]
        ef_search: usize,
        /// Rebuild the features from this canonical-schema directory instead of the run's saved
        /// features.state.
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Charts (PNG and SVG) of one or several runs: training loss, recall@K per task and per
    /// surface, overlaid when several; and report.md linking them with the key numbers.
    Report {
        /// Run directories (or their metrics.json); several are compared.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// Folder for the charts and report.md (default: report/ in the first run's directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The data path alone, timed: read an event log, attribute, label, draw hard negatives and
    /// make every shuffled batch once (with the rules of DIR/dataset.toml where there is one);
    /// print events per second, peak RSS and the counts.
    Pipeline {
        /// The canonical-schema dataset directory.
        dir: PathBuf,
        /// Print one line of JSON instead of a table (the keys of the DuckDB script that
        /// docs/performance.md compares against).
        #[arg(long)]
        json: bool,
        /// Positives per batch.
        #[arg(long, default_value_t = 2048)]
        batch_size: usize,
        /// Seed of the hard-negative draw and the shuffle.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Worker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
}

/// The exit code of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(stop) = e.downcast_ref::<Interrupted>() {
                eprintln!("{stop}");
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                // The message and its causes, never a backtrace: anyhow's Debug form prints one
                // whenever RUST_BACKTRACE is set, as it often is, and a user error is no crash.
                eprintln!("Error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
                ExitCode::FAILURE
            }
        }
    }
}

/// A flag that Ctrl-C, SIGTERM (what schedulers and `docker stop` send) or SIGHUP sets: the run
/// checkpoints at the next step boundary and stops. A second one exits at once, without a
/// checkpoint.
fn ctrl_c_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = Arc::clone(&flag);
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("second stop request: stopping without a checkpoint");
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!(
            "stop requested (Ctrl-C or SIGTERM): saving a checkpoint at the end of this step (Ctrl-C again to quit now)"
        );
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

/// What keeps MPI running until the command ends (nothing without the `mpi` feature).
#[cfg(feature = "mpi")]
type MpiGuard = convcg::dist::mpi::MpiSession;
#[cfg(not(feature = "mpi"))]
type MpiGuard = ();

/// The ranks of a run: this process alone, or (`--distributed`) the MPI job's.
fn start_ranks(distributed: bool) -> Result<(Option<MpiGuard>, Ranks)> {
    if !distributed {
        return Ok((None, Ranks::single()));
    }
    #[cfg(feature = "mpi")]
    {
        let (session, world) = convcg::dist::mpi::start()?;
        Ok((Some(session), Ranks::over(Arc::new(world))))
    }
    #[cfg(not(feature = "mpi"))]
    bail!(
        "--distributed needs convcg built with MPI: `cargo build --release --features mpi`, with an MPI library and libclang installed (Debian: libopenmpi-dev, libclang-dev, openmpi-bin); then start it with mpirun (scripts/mpirun.sh)"
    )
}

/// Prints a rank's error and ends the whole MPI job, so that no other rank waits for this one.
fn abort_ranks(ranks: &Ranks, e: &anyhow::Error) -> ! {
    eprintln!("Error on rank {} of {}: {e}", ranks.rank(), ranks.size());
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    #[cfg(feature = "mpi")]
    convcg::dist::mpi::abort(1);
    #[cfg(not(feature = "mpi"))]
    std::process::exit(1)
}

/// The configuration of a run on the dataset directory `dir` with the user's `config` file,
/// after saying (on stderr) which keys of the dataset's `dataset.toml` that file overrode.
fn layered_config(dir: &Path, config: Option<&Path>) -> Result<RunConfig> {
    let layered = RunConfig::for_dataset_dir(dir, config)?;
    if let (Some(path), false) = (config, layered.overridden.is_empty()) {
        eprintln!(
            "{} overrides {} of {}:",
            path.display(),
            layered.overridden.len(),
            dir.join(convcg::DATASET_CONFIG_FILE).display()
        );
        for o in &layered.overridden {
            eprintln!("  {} = {} (dataset.toml: {})", o.key, o.user, o.dataset);
        }
    }
    Ok(layered.config)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Config { data } => {
            let (cfg, notes, about) = match &data {
                Some(dir) => {
                    let layered = RunConfig::for_dataset_dir(dir, None)?;
                    let about = format!("`convcg train --data {}`", dir.display());
                    (layered.config, layered.from_dataset, about)
                }
                None => (
                    RunConfig::default(),
                    Default::default(),
                    "`convcg train` on the built-in synthetic marketplace".to_owned(),
                ),
            };
            println!(
                "# The configuration of {about}.\n# Pass a file holding any subset of these keys with --config; unset keys keep these values.\n"
            );
            print!("{}", cfg.to_commented_toml(&notes)?);
        }
        Command::Headroom { config, seed, json } => {
            let mut cfg = match &config {
                Some(path) => RunConfig::from_file(path)?,
                None => RunConfig::default(),
            };
            if let Some(seed) = seed {
                cfg.seed = seed;
            }
            let threads = cfg.resolved_threads();
            let report = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .context("cannot start the worker threads")?
                .install(|| convcg::headroom(&cfg, convcg_eval::Par::rayon(threads)))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.table());
            }
        }
        Command::Ablate {
            ladder,
            data,
            config,
            seeds,
            rho,
            out,
            quiet,
        } => {
            let mut cfg = match (&data, &config) {
                (Some(dir), _) => layered_config(dir, config.as_deref())?,
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    convcg::ablation_config_with(&text)
                        .with_context(|| format!("in {}", path.display()))?
                }
                (None, None) => convcg::ablation_config(),
            };
            if let Some(rho) = rho {
                cfg.synth.rho = rho;
            }
            let request = convcg::AblationRequest {
                config: cfg,
                data,
                ladder,
                seeds: (1..=seeds).collect(),
                out: out.unwrap_or_else(|| {
                    convcg::default_run_dir(0).with_file_name(format!(
                        "ablate-{}",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                    ))
                }),
            };
            let verbosity = if quiet {
                Verbosity::Quiet
            } else {
                Verbosity::Normal
            };
            let report = convcg::run_ablation(&request, verbosity)?;
            print!("{}", report.table());
            if !quiet {
                println!("wrote {}", request.out.join("ablation.json").display());
            }
        }
        Command::Import {
            source,
            src,
            out,
            format,
        } => {
            let imported = convcg::import_dataset(source, &src, &out, format)?;
            print!("{}", imported.report);
            println!("wrote {}", out.display());
        }
        Command::Synth {
            out,
            events,
            seed,
            format,
            config,
            shards,
            quiet,
        } => {
            let config = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    toml::from_str::<SynthConfig>(&text)
                        .with_context(|| format!("in {}", path.display()))?
                }
                None => SynthConfig::default(),
            };
            let request = SynthRequest {
                out,
                events,
                seed,
                config,
                format,
                shards,
            };
            let verbosity = if quiet {
                Verbosity::Quiet
            } else {
                Verbosity::Normal
            };
            convcg::synth(&request, verbosity)?;
        }
        Command::Export {
            run_dir,
            format: _,
            out,
        } => {
            let out = out.unwrap_or_else(|| run_dir.join("export"));
            let exported = convcg::export_run(&run_dir, &out)?;
            println!(
                "wrote {} tensors ({} bytes) into {} and their description into {}",
                exported.tensors,
                exported.bytes,
                exported.weights.display(),
                exported.description.display()
            );
        }
        Command::Compare { run_a, run_b, json } => {
            let comparison = convcg::compare_runs(&run_a, &run_b)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&comparison)?);
            } else {
                print!("{}", comparison.table());
            }
        }
        Command::Report { runs, out } => {
            let out = match out {
                Some(out) => out,
                None => convcg::default_report_dir(runs.first().context("no run given")?),
            };
            let files = convcg::write_report(&runs, &out)?;
            for w in &files.warnings {
                eprintln!("{w}");
            }
            println!(
                "wrote {} and {} charts in {}",
                files.markdown.display(),
                files.charts.len(),
                out.display()
            );
        }
        Command::Embed {
            run_dir,
            out,
            data,
            quiet,
        } => {
            let verbosity = if quiet {
                Verbosity::Quiet
            } else {
                Verbosity::Normal
            };
            let summary = convcg::embed_run(&run_dir, data.as_deref(), &out, verbosity)?;
            if !quiet {
                println!(
                    "wrote {} pin and {} user embeddings of width {} into {}",
                    summary.pins,
                    summary.users,
                    summary.dim,
                    out.display()
                );
            }
        }
        Command::Retrieve {
            run_dir,
            users,
            k,
            surface,
            context_pin,
            query,
            exclude_seen,
            out,
            data,
            distributed,
        } => {
            let (_mpi, ranks) = start_ranks(distributed)?;
            let leader = ranks.is_leader();
            let ids = convcg::read_user_ids(&users)?;
            // Progress goes to stderr only when the lists go to a file.
            let verbosity = if out.is_some() && leader {
                Verbosity::Normal
            } else {
                Verbosity::Quiet
            };
            let opts = convcg::RetrieveOptions {
                k,
                surface,
                context_pin_id: context_pin,
                query_id: query,
                exclude_seen,
                open: convcg::serve::OpenOptions {
                    data,
                    verbosity,
                    index: convcg::serve::IndexChoice::Exact,
                },
                ranks: ranks.clone(),
            };
            let found = match convcg::retrieve(&run_dir, &ids, &opts) {
                Err(e) if ranks.is_distributed() => abort_ranks(&ranks, &e),
                found => found?,
            };
            if !leader {
                return Ok(());
            }
            if let Some(first) = found.cold_users.first() {
                eprintln!(
                    "warning: {} of {} users are not in the run's user table (the first: {first}): served cold, from the out-of-vocabulary user row with no engagements",
                    found.cold_users.len(),
                    ids.len()
                );
            }
            let csv = convcg::retrieved_csv(&found.lists, found.source_ids.as_ref())?;
            match out {
                Some(path) => {
                    convcg::write_atomic(&path, csv.as_bytes())?;
                    println!(
                        "wrote the top {k} of {} users into {}",
                        ids.len(),
                        path.display()
                    );
                }
                None => print!("{csv}"),
            }
        }
        Command::Serve {
            run_dir,
            addr,
            max_k,
            index,
            hnsw_m,
            ef_construction,
            ef_search,
            data,
        } => {
            let index = match index.as_str() {
                "hnsw" => convcg::serve::IndexChoice::Hnsw(convcg::serve::HnswOptions {
                    connectivity: hnsw_m,
                    expansion_add: ef_construction,
                    expansion_search: ef_search,
                }),
                _ => convcg::serve::IndexChoice::Exact,
            };
            let options = convcg::serve::ServeOptions {
                addr: convcg::serve::parse_addr(&addr)?,
                max_k,
                open: convcg::serve::OpenOptions {
                    data,
                    verbosity: Verbosity::Normal,
                    index,
                },
            };
            convcg::serve::serve(&run_dir, options)?;
        }
        Command::Pipeline {
            dir,
            json,
            batch_size,
            seed,
            threads,
        } => {
            let req = convcg::PipelineRequest {
                batch_size,
                seed,
                threads,
            };
            let verbosity = if json {
                Verbosity::Quiet
            } else {
                Verbosity::Normal
            };
            let report = convcg::run_w3(&dir, &req, verbosity)?;
            if json {
                println!("{}", convcg::report_json(&report, &req));
            } else {
                print!("{}", convcg::report_table(&report));
            }
        }
        Command::Train {
            data,
            config,
            seed,
            out,
            force,
            resume,
            quiet,
            distributed,
        } => {
            if distributed && out.is_none() && resume.is_none() {
                bail!(
                    "--distributed needs --out DIR (or --resume DIR): the ranks must agree on the run directory"
                );
            }
            let (_mpi, ranks) = start_ranks(distributed)?;
            // Rank 0 speaks for the run.
            let quiet = quiet || !ranks.is_leader();
            let control = RunControl {
                verbosity: if quiet {
                    Verbosity::Quiet
                } else {
                    Verbosity::Normal
                },
                stop: Some(ctrl_c_flag()?),
                faults: convcg::fault::FaultPlan::from_env()?,
            };
            let trained = |request: TrainRequest<'_>| {
                let result = request.with_ranks(ranks.clone()).run();
                match result {
                    Err(e)
                        if ranks.is_distributed() && e.downcast_ref::<Interrupted>().is_none() =>
                    {
                        abort_ranks(&ranks, &e)
                    }
                    other => other.map(|_| ()),
                }
            };
            let dir = match resume {
                Some(dir) => {
                    trained(TrainRequest::resume(&dir).with_control(control))?;
                    dir
                }
                None => {
                    let mut cfg = match (&data, &config) {
                        (Some(dir), _) => layered_config(dir, config.as_deref())?,
                        (None, Some(path)) => RunConfig::from_file(path)?,
                        (None, None) => RunConfig::default(),
                    };
                    if let Some(seed) = seed {
                        cfg.seed = seed;
                    }
                    let dir = out.unwrap_or_else(|| convcg::default_run_dir(cfg.seed));
                    let source = match &data {
                        Some(data_dir) => TrainData::Directory(data_dir),
                        None => TrainData::Synthetic,
                    };
                    trained(
                        TrainRequest::new(&cfg, source, &dir)
                            .with_control(control)
                            .replacing(force),
                    )?;
                    dir
                }
            };
            if !quiet {
                println!(
                    "wrote {}, {}, {} and {}",
                    dir.join("config.toml").display(),
                    dir.join(convcg::MODEL_FILE).display(),
                    dir.join(convcg::checkpoint::FEATURE_STATE_FILE).display(),
                    dir.join("metrics.json").display()
                );
            }
        }
    }
    Ok(())
}
