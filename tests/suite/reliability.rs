//! Crash tests of `convcg train`: killed (SIGKILL) at seeded steps and inside a checkpoint
//! write, interrupted (SIGINT), corrupted and truncated checkpoints, a full disk, an unwritable
//! directory and deleted input files. Every resumed run must finish exactly as an uninterrupted
//! one: the same `model.ckpt` bytes (parameters bit for bit) and the same `metrics.json` (loss
//! curve and every metric).
//!
//! The binary is steered through the test-only fault seam (`CONVCG_FAULT`, see
//! docs/reliability.md): it stops at a chosen step or checkpoint-write stage and prints a marker
//! line, at which the test kills it, so every run of the test kills at the same points.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use convcg::MODEL_FILE;
use convcg::checkpoint::{CHECKPOINT_DIR, Checkpoint, KEEP, checkpoint_name, list_checkpoints};
use convcg::fault::{FAULT_ENV, FAULT_MARKER};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::support::TINY_WORLD;

/// A marketplace of 40,000 impressions and a small model, so that a run is quick (105 steps,
/// checkpointing every [`EVERY`] steps, and never by time, so that where checkpoints fall does
/// not depend on the machine's speed).
fn tiny() -> String {
    format!(
        "seed = 11\nthreads = 2\n{TINY_WORLD}\n[train]\nbatch_size = 32\nepochs = 3.0\n\
         log_every = 4\ncheckpoint_every = {EVERY}\ncheckpoint_every_s = 0\n"
    )
}

/// `[train] checkpoint_every` of [`tiny`].
const EVERY: u64 = 10;

/// How long a child may take to reach a marker or finish.
const PATIENCE: Duration = Duration::from_secs(120);

fn convcg() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_convcg"));
    c.env_remove(FAULT_ENV).env_remove("RUST_BACKTRACE");
    c
}

/// A working directory with the tiny config and a run directory path.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with(&tiny())
    }
    fn with(config: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("tiny.toml"), config).expect("writable");
        Fixture { dir }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("tiny.toml")
    }
    fn run_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn checkpoints(&self, run: &str) -> PathBuf {
        self.run_dir(run).join(CHECKPOINT_DIR)
    }
}

/// `convcg train` of the tiny config into `run`, or a resume of `run`.
fn train_cmd(fx: &Fixture, run: &str, resume: bool) -> Command {
    let mut c = convcg();
    c.arg("train");
    if resume {
        c.arg("--resume").arg(fx.run_dir(run));
    } else {
        c.arg("--config")
            .arg(fx.config())
            .arg("--out")
            .arg(fx.run_dir(run));
    }
    c
}

/// A finished process's status and stderr.
struct Finished {
    status: ExitStatus,
    stderr: String,
}

fn finish(mut c: Command) -> Finished {
    let out = c.output().expect("convcg runs");
    Finished {
        status: out.status,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn finish_ok(c: Command) -> Finished {
    let f = finish(c);
    assert!(f.status.success(), "convcg failed: {}", f.stderr);
    f
}

/// A child whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

fn spawn(mut c: Command, fault: &str) -> Running {
    let mut child = c
        .env(FAULT_ENV, fault)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("convcg starts");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines,
        seen: Vec::new(),
    }
}

impl Running {
    /// Waits for the fault marker; panics with what the child printed if it never comes.
    fn wait_for_marker(&mut self) -> String {
        loop {
            match self.lines.recv_timeout(PATIENCE) {
                Ok(line) if line.starts_with(FAULT_MARKER) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no fault marker; the child printed:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// SIGKILL, and reap.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reaped");
    }
}

/// The step a resumed run says it resumes from.
fn resumed_from(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("resuming from"))
        .unwrap_or_else(|| panic!("no resume line in:\n{stderr}"));
    let step = line
        .split("(step ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("bad resume line {line}"));
    step.parse().expect("a step number")
}

/// The newest periodic checkpoint's step, read back sound.
fn newest_checkpoint(dir: &Path) -> Option<u64> {
    let newest = list_checkpoints(dir).expect("listable");
    let (step, path) = newest.into_iter().next()?;
    Checkpoint::read(&path).expect("the newest checkpoint reads back");
    Some(step)
}

/// No temporary file of an interrupted write in `dir`.
fn assert_no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("listable").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.contains(".tmp-"), "temporary file left: {name}");
    }
}

/// What an uninterrupted run writes, to compare resumed runs against.
struct Reference {
    model: Vec<u8>,
    metrics: serde_json::Value,
    steps: u64,
    checkpoint_bytes: u64,
}

fn reference(fx: &Fixture) -> Reference {
    finish_ok(train_cmd(fx, "reference", false));
    let run = fx.run_dir("reference");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).expect("metrics"))
            .expect("json");
    let steps = metrics["training"]["steps"].as_u64().expect("steps");
    let kept = list_checkpoints(&fx.checkpoints("reference")).expect("listable");
    assert_eq!(kept.len(), KEEP, "{kept:?}");
    let newest = (steps - 1) / EVERY * EVERY;
    assert_eq!(kept[0].0, newest, "{kept:?}");
    Reference {
        model: std::fs::read(run.join(MODEL_FILE)).expect("model.ckpt"),
        steps,
        checkpoint_bytes: std::fs::metadata(&kept[0].1).expect("size").len(),
        metrics,
    }
}

/// The run in `run` finished exactly as the reference did.
fn assert_identical(fx: &Fixture, run: &str, r: &Reference) {
    let dir = fx.run_dir(run);
    let model = std::fs::read(dir.join(MODEL_FILE)).expect("model.ckpt");
    assert!(
        model == r.model,
        "{run}: model.ckpt differs from the uninterrupted run's"
    );
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("metrics.json")).expect("metrics"))
            .expect("json");
    assert_eq!(
        metrics["training"]["loss_curve"], r.metrics["training"]["loss_curve"],
        "{run}: loss curve"
    );
    assert_eq!(metrics, r.metrics, "{run}: metrics.json");
}

/// Killed with SIGKILL at two seeded steps and inside a checkpoint write after each of its
/// stages (in a seeded order), resumed each time: at most `checkpoint_every` steps are redone, and the run finishes with
/// the uninterrupted run's parameters and metrics, bit for bit.
#[test]
fn killed_runs_resume_and_finish_identically() {
    let fx = Fixture::new();
    let r = reference(&fx);
    assert!(r.steps > 3 * EVERY, "{} steps: too few to test", r.steps);
    let mut rng = ChaCha8Rng::seed_from_u64(0xC4A5);
    let first = rng.random_range(1..r.steps / 2);
    let second = rng.random_range(first + 1..r.steps - 2 * EVERY);

    // Kill 1: a fresh run at step `first`.
    let mut child = spawn(
        train_cmd(&fx, "run", false),
        &format!("hang_at_step={first}"),
    );
    child.wait_for_marker();
    child.kill();
    let kept = newest_checkpoint(&fx.checkpoints("run"));
    assert_eq!(kept.unwrap_or(0), first / EVERY * EVERY, "after kill 1");

    // Kill 2: the resumed run at step `second` (or, if no checkpoint was written yet, the
    // resume is refused and the run starts again).
    let command = if kept.is_some() {
        train_cmd(&fx, "run", true)
    } else {
        let refused = finish(train_cmd(&fx, "run", true));
        assert!(!refused.status.success());
        assert!(
            refused.stderr.contains("no checkpoint"),
            "{}",
            refused.stderr
        );
        let mut again = train_cmd(&fx, "run", false);
        again.arg("--force");
        again
    };
    let mut child = spawn(command, &format!("hang_at_step={second}"));
    child.wait_for_marker();
    let redo_from = child
        .seen
        .iter()
        .find(|l| l.starts_with("resuming from"))
        .map_or(0, |l| resumed_from(l));
    assert!(
        first - redo_from < EVERY,
        "resumed at {redo_from} after a kill at {first}"
    );
    child.kill();
    let at_second = second / EVERY * EVERY;
    assert_eq!(
        newest_checkpoint(&fx.checkpoints("run")),
        Some(at_second).filter(|&s| s > 0)
    );

    // Kills 3 to 6: inside the next checkpoint write, after each stage in a seeded order.
    let mut stages = ["created", "written", "synced", "renamed"];
    stages.shuffle(&mut rng);
    let mut newest = at_second;
    let mut written = newest;
    for stage in stages {
        let mut child = spawn(
            train_cmd(&fx, "run", true),
            &format!("hang_in_write=1:{stage}"),
        );
        let marker = child.wait_for_marker();
        assert!(marker.contains(stage), "{marker}");
        child.kill();
        written = newest + EVERY;
        // Before the rename the old checkpoint is the newest; from the rename on, the new one.
        if stage == "renamed" {
            newest = written;
        }
        assert_eq!(
            newest_checkpoint(&fx.checkpoints("run")),
            Some(newest),
            "killed in the write of step {written} after {stage}"
        );
    }

    let done = finish_ok(train_cmd(&fx, "run", true));
    let from = resumed_from(&done.stderr);
    assert!(
        written - from <= EVERY,
        "resumed at {from}, killed at {written}"
    );
    assert_no_temp_files(&fx.checkpoints("run"));
    assert_identical(&fx, "run", &r);
}

/// SIGINT (Ctrl-C) or SIGTERM (what schedulers and `docker stop` send) at a step: a checkpoint
/// of exactly that step, exit code 130, a message that says how to resume; the resumed run
/// finishes identically. This run uses the streaming log-q estimate, whose state the
/// checkpoint carries too.
#[test]
fn ctrl_c_and_sigterm_checkpoint_and_exit_130_then_resume_identically() {
    let fx = Fixture::with(&format!(
        "{}\n[data]\nlog_q = \"streaming\"\n\n[data.streaming_log_q]\nbuckets = 4096\n",
        tiny()
    ));
    let r = reference(&fx);
    let step = 13;
    for signal in ["INT", "TERM"] {
        let run = format!("run-{signal}");
        let mut child = spawn(train_cmd(&fx, &run, false), &format!("hang_at_step={step}"));
        child.wait_for_marker();
        let pid = child.child.id().to_string();
        let sent = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
        let status = child.child.wait().expect("exits");
        let rest: Vec<String> = child.lines.iter().collect();
        let stderr = rest.join("\n");
        assert_eq!(status.code(), Some(130), "SIG{signal}: {stderr}");
        assert!(stderr.contains("--resume"), "{stderr}");
        assert!(stderr.contains(&checkpoint_name(step)), "{stderr}");
        assert_eq!(newest_checkpoint(&fx.checkpoints(&run)), Some(step));
        let done = finish_ok(train_cmd(&fx, &run, true));
        assert_eq!(resumed_from(&done.stderr), step);
        assert_identical(&fx, &run, &r);
    }
}

/// Killed after two checkpoints; the newest is damaged (a flipped byte, then a truncation):
/// the resume names the file and the reason, falls back to the previous checkpoint, and
/// finishes identically. With both damaged, it refuses with both reasons.
#[test]
fn a_corrupted_or_truncated_checkpoint_is_refused_and_the_previous_one_used() {
    let fx = Fixture::new();
    let r = reference(&fx);
    for damage in ["flip", "truncate", "both"] {
        let run = format!("run-{damage}");
        let kill_at = 2 * EVERY + 5;
        let mut cmd = convcg();
        cmd.args(["train", "--config"])
            .arg(fx.config())
            .arg("--out")
            .arg(fx.run_dir(&run));
        let mut child = spawn(cmd, &format!("hang_at_step={kill_at}"));
        child.wait_for_marker();
        child.kill();
        let dir = fx.checkpoints(&run);
        let newest = dir.join(checkpoint_name(2 * EVERY));
        let older = dir.join(checkpoint_name(EVERY));
        let mut bytes = std::fs::read(&newest).expect("newest checkpoint");
        match damage {
            "flip" => {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x40;
                std::fs::write(&newest, &bytes).expect("writable");
            }
            "truncate" => std::fs::write(&newest, &bytes[..bytes.len() / 3]).expect("writable"),
            _ => {
                std::fs::write(&newest, &bytes[..bytes.len() - 1]).expect("writable");
                let mut old = std::fs::read(&older).expect("older checkpoint");
                let last = old.len() - 1;
                old[last] ^= 1;
                std::fs::write(&older, &old).expect("writable");
            }
        }
        let resumed = finish(train_cmd(&fx, &run, true));
        let name = checkpoint_name(2 * EVERY);
        match damage {
            "both" => {
                assert!(!resumed.status.success());
                let e = &resumed.stderr;
                assert!(e.contains("no usable checkpoint"), "{e}");
                assert!(e.contains(&name) && e.contains("truncated"), "{e}");
                assert!(
                    e.contains(&checkpoint_name(EVERY)) && e.contains("checksum"),
                    "{e}"
                );
            }
            _ => {
                let e = &resumed.stderr;
                assert!(resumed.status.success(), "{e}");
                let why = if damage == "flip" {
                    "checksum"
                } else {
                    "truncated"
                };
                assert!(e.contains(&name) && e.contains(why), "{e}");
                assert!(e.contains("falling back"), "{e}");
                assert_eq!(resumed_from(e), EVERY);
                assert!(dir.join(format!("{name}.bad")).exists());
                assert_identical(&fx, &run, &r);
            }
        }
    }
}

/// The disk fills during the second checkpoint write (the seam), and the directory turns
/// unwritable before it: a clear error naming the file and the cause, the first checkpoint
/// intact and loadable, no temporary file; resuming once the fault is gone finishes
/// identically.
#[test]
fn a_full_disk_or_unwritable_directory_stops_with_the_previous_checkpoint_intact() {
    let fx = Fixture::new();
    let r = reference(&fx);
    let budget = r.checkpoint_bytes + r.checkpoint_bytes / 2;
    for (fault, cause) in [
        (format!("disk_full_after={budget}"), "disk is full"),
        ("unwritable_from=2".to_owned(), "not writable"),
    ] {
        let run = if cause.starts_with("disk") {
            "full"
        } else {
            "unwritable"
        };
        let mut cmd = train_cmd(&fx, run, false);
        cmd.env(FAULT_ENV, &fault);
        let failed = finish(cmd);
        let e = &failed.stderr;
        assert!(!failed.status.success(), "{fault}: {e}");
        assert!(e.contains(&checkpoint_name(2 * EVERY)), "{fault}: {e}");
        assert!(e.contains(cause), "{fault}: {e}");
        assert!(
            e.contains(&checkpoint_name(EVERY)) && e.contains("intact"),
            "{fault}: {e}"
        );
        assert!(e.contains("--resume"), "{fault}: {e}");
        assert!(!e.contains("panicked"), "{e}");
        let dir = fx.checkpoints(run);
        assert_no_temp_files(&dir);
        assert_eq!(newest_checkpoint(&dir), Some(EVERY), "{fault}");
        assert!(!dir.join(checkpoint_name(2 * EVERY)).exists());
        finish_ok(train_cmd(&fx, run, true));
        assert_identical(&fx, run, &r);
    }
}

/// Real (not simulated) write failures: a run directory that is a regular file, and a
/// checkpoint directory that is one. Clear errors, no panic.
#[test]
fn real_unwritable_paths_are_clear_errors() {
    let fx = Fixture::new();
    let file = fx.run_dir("a-file");
    std::fs::write(&file, "not a directory").expect("writable");
    let mut cmd = convcg();
    cmd.args(["train", "--quiet", "--config"])
        .arg(fx.config())
        .arg("--out")
        .arg(&file);
    let f = finish(cmd);
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("cannot create the run directory"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);

    let run = fx.run_dir("blocked");
    std::fs::create_dir_all(&run).expect("creatable");
    std::fs::write(run.join(CHECKPOINT_DIR), "in the way").expect("writable");
    let f = finish(train_cmd(&fx, "blocked", false));
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("cannot create the checkpoint directory"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
}

/// Resume refusals: no checkpoint yet, a fresh run over an existing one, and a config edited
/// between the kill and the resume (named by key).
#[test]
fn resume_refuses_what_it_cannot_continue_exactly() {
    let fx = Fixture::new();
    let mut child = spawn(train_cmd(&fx, "early", false), "hang_at_step=3");
    child.wait_for_marker();
    child.kill();
    let f = finish(train_cmd(&fx, "early", true));
    assert!(!f.status.success());
    assert!(f.stderr.contains("no checkpoint"), "{}", f.stderr);

    let mut child = spawn(
        train_cmd(&fx, "edited", false),
        &format!("hang_at_step={}", EVERY + 1),
    );
    child.wait_for_marker();
    child.kill();
    let f = finish(train_cmd(&fx, "edited", false));
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("already holds a checkpoint") && f.stderr.contains("--resume"),
        "{}",
        f.stderr
    );
    let config = fx.run_dir("edited").join("config.toml");
    let text = std::fs::read_to_string(&config).expect("config.toml");
    std::fs::write(&config, text.replace("epochs = 3.0", "epochs = 4.0")).expect("writable");
    let f = finish(train_cmd(&fx, "edited", true));
    assert!(!f.status.success());
    assert!(f.stderr.contains("train.epochs"), "{}", f.stderr);
}

/// A run on a dataset directory whose files are deleted while it is down: resuming names the
/// missing file (or the missing directory) and leaves the checkpoints intact.
#[test]
fn deleted_input_files_are_a_clear_error_and_the_checkpoints_stay() {
    let fx = Fixture::new();
    let data = fx.run_dir("data");
    let world = fx.run_dir("world.toml");
    std::fs::write(
        &world,
        "num_users = 400\nnum_pins = 1500\nnum_advertisers = 60\nnum_categories = 12\n\
         num_brands = 80\nnum_queries = 24\nconversion_bias = -3.5\n",
    )
    .expect("writable");
    let mut cmd = convcg();
    cmd.args([
        "synth", "--quiet", "--events", "40000", "--seed", "11", "--format", "csv",
    ])
    .arg("--config")
    .arg(&world)
    .arg("--out")
    .arg(&data);
    finish_ok(cmd);
    let mut cmd = convcg();
    cmd.args(["train", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(fx.config())
        .arg("--out")
        .arg(fx.run_dir("run"));
    let mut child = spawn(cmd, &format!("hang_at_step={}", EVERY + 2));
    child.wait_for_marker();
    child.kill();
    let dir = fx.checkpoints("run");
    assert_eq!(newest_checkpoint(&dir), Some(EVERY));

    std::fs::remove_file(data.join("impressions.csv")).expect("removable");
    let f = finish(train_cmd(&fx, "run", true));
    assert!(!f.status.success());
    assert!(f.stderr.contains("impressions"), "{}", f.stderr);
    assert_eq!(newest_checkpoint(&dir), Some(EVERY));

    std::fs::remove_dir_all(&data).expect("removable");
    let f = finish(train_cmd(&fx, "run", true));
    assert!(!f.status.success());
    assert!(
        f.stderr.contains("is gone") && f.stderr.contains("input files deleted"),
        "{}",
        f.stderr
    );
    assert_eq!(newest_checkpoint(&dir), Some(EVERY));
}

/// `load_model` rebuilds the trained towers from `model.ckpt` alone.
#[test]
fn load_model_rebuilds_the_trained_model() {
    let fx = Fixture::new();
    finish_ok(train_cmd(&fx, "run", false));
    let (cfg, model) = convcg::load_model(&fx.run_dir("run").join(MODEL_FILE)).expect("loads");
    assert_eq!(cfg.seed, 11);
    let saved = Checkpoint::read(&fx.run_dir("run").join(MODEL_FILE)).expect("reads");
    assert_eq!(model.params(), &saved.params);
    assert!(saved.training.is_none());
}

/// Killed after training, during evaluation: the resume evaluates the saved model instead of
/// training again and finishes as the uninterrupted run did. A finished run is not resumed but
/// said to be finished, and a new run into its directory is refused unless `--force`, which
/// replaces it and leaves no stale `report/` behind.
#[test]
fn a_run_killed_in_evaluation_resumes_by_evaluating_and_a_finished_run_is_kept() {
    let fx = Fixture::new();
    let r = reference(&fx);
    let mut child = spawn(train_cmd(&fx, "late", false), "hang_in_evaluation=1");
    child.wait_for_marker();
    child.kill();
    assert!(fx.run_dir("late").join(MODEL_FILE).is_file());
    let done = finish_ok(train_cmd(&fx, "late", true));
    assert!(
        done.stderr.contains("training had finished") && !done.stderr.contains("resuming from"),
        "{}",
        done.stderr
    );
    assert_identical(&fx, "late", &r);

    let again = finish(train_cmd(&fx, "late", true));
    assert!(!again.status.success());
    assert!(
        again.stderr.contains("is a finished run"),
        "{}",
        again.stderr
    );

    let report = fx.run_dir("late").join("report");
    std::fs::create_dir_all(&report).expect("writable");
    std::fs::write(report.join("recall.svg"), "a chart of the old run").expect("writable");
    let refused = finish(train_cmd(&fx, "late", false));
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("already holds a finished run")
            && refused.stderr.contains("--force"),
        "{}",
        refused.stderr
    );
    assert!(report.is_dir(), "a refused run deletes nothing");
    let mut forced = train_cmd(&fx, "late", false);
    forced.arg("--force");
    finish_ok(forced);
    assert!(!report.exists(), "the old run's report/ is gone");
    assert_identical(&fx, "late", &r);
}

/// With step checkpoints off and `checkpoint_every_s` tiny, every step checkpoints by wall time:
/// a run killed early resumes from the step it was killed at.
#[test]
fn checkpoints_come_by_wall_time_too() {
    let fx = Fixture::with(&tiny().replace(
        &format!("checkpoint_every = {EVERY}\ncheckpoint_every_s = 0\n"),
        "checkpoint_every = 0\ncheckpoint_every_s = 0.000001\n",
    ));
    let mut child = spawn(train_cmd(&fx, "timed", false), "hang_at_step=7");
    child.wait_for_marker();
    child.kill();
    assert_eq!(newest_checkpoint(&fx.checkpoints("timed")), Some(7));
    let done = finish_ok(train_cmd(&fx, "timed", true));
    assert_eq!(resumed_from(&done.stderr), 7);
}
