//! W1's step split into its phases, as the PyTorch peer reports them: forward (towers and loss),
//! backward (the tape in reverse) and optimiser (Adam and row-wise Adagrad), each the median over
//! 20 steps after the warm-up, printed as one JSON line; with the memory W1 needs by construction
//! (parameters, optimiser state, gradients, one step's activations as the tape holds them, the
//! pre-made batches) beside the process's peak RSS.
//!
//! With `--nodes`, the tape also times every node (`Tape::set_profiling`) and a table of each
//! node's median forward and backward time over the 20 steps goes to standard error, slowest
//! first: where a step's time goes, op by op.
//!
//! ```sh
//! cargo run --release --example w1_phases            # all cores; CONVCG_THREADS=1 for one,
//!                                                  # CONVCG_PRECISION=bf16 for bf16 products
//! cargo run --release --example w1_phases -- --nodes
//! ```

#[path = "../benches/w1_setup/mod.rs"]
mod w1_setup;

use std::time::Instant;

use convcg_model::NodeTiming;
use w1_setup::{B, W1, pool, threads};

const STEPS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Peak resident set size of this process (`VmHWM`), where the system reports it.
fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() {
    let nodes = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--nodes") => true,
        Some(other) => {
            eprintln!("w1_phases: unknown argument {other:?} (the only one is --nodes)");
            std::process::exit(2);
        }
    };
    // Inside a pool of the thread count, as the benchmark and `convcg train` run their steps.
    pool(threads()).install(|| run(nodes));
}

/// Prints each node's median forward and backward time over the steps, slowest first, with
/// each one's share of the summed medians.
fn print_nodes(steps: &[Vec<NodeTiming>]) {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    let mut rows: Vec<(String, (usize, usize), f64, f64)> = steps[0]
        .iter()
        .map(|first| {
            let times = |f: &dyn Fn(&NodeTiming) -> f64| {
                median(steps.iter().map(|s| f(&s[first.node])).collect())
            };
            let fwd = times(&|n| ms(n.forward));
            let bwd = times(&|n| ms(n.backward));
            (first.label.clone(), first.shape, fwd, bwd)
        })
        .collect();
    let total: f64 = rows.iter().map(|r| r.2 + r.3).sum();
    rows.sort_by(|a, b| (b.2 + b.3).total_cmp(&(a.2 + a.3)));
    eprintln!(
        "{:<32} {:>12} {:>9} {:>9} {:>6}",
        "node", "shape", "fwd ms", "bwd ms", "share"
    );
    for (label, (r, c), fwd, bwd) in rows {
        eprintln!(
            "{label:<32} {:>12} {fwd:>9.3} {bwd:>9.3} {:>5.1}%",
            format!("{r}x{c}"),
            100.0 * (fwd + bwd) / total
        );
    }
    eprintln!(
        "{:<32} {:>12} {total:>19.3} ms (sum of the medians)",
        "all nodes", ""
    );
}

fn run(nodes: bool) {
    let threads = threads();
    let mut w = W1::new(threads, w1_setup::precision());
    w.tape.set_profiling(nodes);
    let mut profiles = Vec::new();
    let (mut fwd, mut bwd, mut opt, mut step) = (vec![], vec![], vec![], vec![]);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    for _ in 0..STEPS {
        let i = w.take_step();
        let batch = w.steps[i].batch();
        let t0 = Instant::now();
        w.tape.reset(w.par);
        let loss = w
            .model
            .loss(&mut w.tape, &batch)
            .expect("W1 batch is well formed");
        fwd.push(ms(t0));
        let t1 = Instant::now();
        w.grads.zero();
        w.tape.backward(loss, w.model.params(), &mut w.grads);
        bwd.push(ms(t1));
        let t2 = Instant::now();
        w.opt.step(w.model.params_mut(), &w.grads, w.par);
        opt.push(ms(t2));
        step.push(ms(t0));
        assert!(w.tape.scalar(loss).is_finite(), "W1 diverged");
        if nodes {
            profiles.push(w.tape.profile(w.model.params()));
        }
    }
    if nodes {
        print_nodes(&profiles);
    }
    let step_ms = median(step);
    let (params, state) = (w.model.params().bytes(), w.opt.state_bytes());
    let (grads, activations) = (w.grads.held_bytes(), w.tape.held_bytes());
    let batches: usize = w.steps.iter().map(|s| s.bytes()).sum();
    let analytic = params + state + grads + activations + batches;
    let rss = peak_rss_bytes().map_or("null".to_owned(), |b| format!("{:.1}", mb(b)));
    println!(
        "{{\"workload\":\"w1_phases\",\"threads\":{threads},\"steps\":{STEPS},\
         \"examples_per_s\":{:.0},\"step_ms_median\":{step_ms:.2},\"forward_ms_median\":{:.2},\
         \"backward_ms_median\":{:.2},\"optimizer_ms_median\":{:.2},\"params_mb\":{:.1},\
         \"optimizer_state_mb\":{:.1},\"grads_mb\":{:.1},\"activations_mb\":{:.1},\
         \"batches_mb\":{:.1},\"analytic_mb\":{:.1},\"peak_rss_mb\":{rss}}}",
        B as f64 / step_ms * 1e3,
        median(fwd),
        median(bwd),
        median(opt),
        mb(params),
        mb(state),
        mb(grads),
        mb(activations),
        mb(batches),
        mb(analytic),
    );
}
