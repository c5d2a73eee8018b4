//! Data-parallel training over MPI (built with `--features mpi`; `.ci/run` installs OpenMPI and
//! runs these): `mpirun -np 2 convcg train --distributed` trains the model one process trains,
//! up to the order of float sums, and a distributed run killed and resumed ends exactly as an
//! uninterrupted one.

// The suite's helpers and tiny marketplace; this target uses part of them.
#[allow(dead_code)]
#[path = "suite/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use convcg::{compare_runs, load_model};

use support::{TINY_WORLD, convcg, succeed};

/// A tiny run: 1 thread a process, some uniform corpus negatives (a third candidate segment),
/// checkpoints every 10 steps.
fn config(dir: &Path) -> PathBuf {
    let text = format!(
        "seed = 5\nthreads = 1\n{TINY_WORLD}\n[train]\nbatch_size = 64\nepochs = 0.5\nmin_steps = 30\nuniform_negatives = 24\ncheckpoint_every = 10\n"
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `convcg ARGS` on `n` ranks through the project's launcher.
fn mpirun(n: usize, args: &[&str]) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/mpirun.sh");
    let mut cmd = Command::new(script);
    cmd.env("CONVCG_BIN", env!("CARGO_BIN_EXE_convcg"))
        .arg(n.to_string())
        .args(args);
    cmd
}

/// `convcg train` of the config `cfg` into `out`, in one process.
fn train_one_process(cfg: &Path, out: &Path) {
    succeed(convcg().args([
        "train",
        "--quiet",
        "--config",
        path(cfg),
        "--out",
        path(out),
    ]));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every parameter, dense then tables, of a run's `model.ckpt`.
fn params(run: &Path) -> Vec<f32> {
    let (_, model) = load_model(&run.join(convcg::MODEL_FILE)).unwrap();
    model.params().values().collect()
}

fn losses(run: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(run.join("training.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["loss_curve"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn two_ranks_train_what_one_process_trains_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let (one, two, resumed) = (
        tmp.path().join("one"),
        tmp.path().join("two"),
        tmp.path().join("resumed"),
    );
    train_one_process(&cfg, &one);
    let distributed = [
        "train",
        "--distributed",
        "--quiet",
        "--config",
        path(&cfg),
        "--out",
    ];
    succeed(&mut mpirun(2, &[&distributed[..], &[path(&two)]].concat()));

    // The same model up to float summation order, after 30 steps of Adam.
    let (a, b) = (params(&one), params(&two));
    assert_eq!(a.len(), b.len());
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1.0))
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "parameters differ by up to {worst}");
    assert!(worst > 0.0 || a == b);
    for (x, y) in losses(&one).iter().zip(&losses(&two)) {
        assert!((x - y).abs() <= 1e-5 * x.abs(), "loss {x} against {y}");
    }
    // And the same recall, within the interval of the paired difference.
    let cmp = compare_runs(&one, &two).unwrap();
    let recall = cmp
        .recall
        .iter()
        .find(|r| r.task == "conversion" && r.surface == "all" && r.k == 100)
        .unwrap();
    let interval = recall.interval.as_ref().unwrap();
    assert!(
        interval.covers_zero(),
        "conversion recall@100 {} against {}: {interval:?}",
        recall.a,
        recall.b
    );

    // Both ranks abort after step 25 (rank 0 saved step 20); resumed on 2 ranks, the run ends
    // with the uninterrupted run's bits.
    let killed = mpirun(2, &[&distributed[..], &[path(&resumed)]].concat())
        .env(convcg::fault::FAULT_ENV, "abort_at_step=25")
        .output()
        .unwrap();
    assert!(!killed.status.success(), "the aborted run succeeded");
    assert!(
        resumed
            .join(convcg::checkpoint::CHECKPOINT_DIR)
            .join(convcg::checkpoint::checkpoint_name(20))
            .is_file()
    );
    succeed(&mut mpirun(
        2,
        &[
            "train",
            "--distributed",
            "--quiet",
            "--resume",
            path(&resumed),
        ],
    ));
    assert_eq!(losses(&resumed), losses(&two));
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert!(
        bits(params(&resumed)) == bits(params(&two)),
        "resumed parameters differ"
    );
}

/// `convcg retrieve --distributed` on 2 ranks (each scoring half the pins) writes the lists one
/// process writes, to the last digit.
#[test]
fn retrieval_over_two_ranks_is_the_single_process_retrieval() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path());
    let run = tmp.path().join("run");
    train_one_process(&cfg, &run);
    let users = tmp.path().join("users.txt");
    // Three users of the tiny world and one it never saw (served cold).
    std::fs::write(&users, "1000001\n1000017\n1000123\n42\n").unwrap();
    let (one, two) = (tmp.path().join("one.csv"), tmp.path().join("two.csv"));
    let args = |out: &Path| {
        [
            "retrieve",
            path(&run),
            "--users",
            path(&users),
            "--k",
            "50",
            "--exclude-seen",
            "--out",
            path(out),
        ]
        .map(str::to_owned)
    };
    succeed(convcg().args(args(&one)));
    let mut distributed = args(&two).to_vec();
    distributed.push("--distributed".to_owned());
    let refs: Vec<&str> = distributed.iter().map(String::as_str).collect();
    succeed(&mut mpirun(2, &refs));
    let (a, b) = (
        std::fs::read_to_string(&one).unwrap(),
        std::fs::read_to_string(&two).unwrap(),
    );
    assert_eq!(a.lines().count(), 1 + 4 * 50);
    assert_eq!(a, b);
}

/// Without MPI ranks to agree on it, a distributed run needs its directory named.
#[test]
fn a_distributed_run_needs_its_directory() {
    let out = convcg().args(["train", "--distributed"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--distributed needs --out DIR"), "{err}");
}
