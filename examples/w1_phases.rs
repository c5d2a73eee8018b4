//! W1's step split into its phases, as the PyTorch peer reports them: forward (towers and loss),
//! backward (the tape in reverse) and optimiser (Adam and row-wise Adagrad), each the median over
//! 20 steps after the warm-up, printed as one JSON line; with the memory W1 needs by construction
//! (parameters, optimiser state, gradients, one step's activations as the tape holds them, the
//! pre-made batches) beside the process's peak RSS.
//!
//! ```sh
//! cargo run --release --example w1_phases            # all cores; CONVCG_THREADS=1 for one
//! ```

#[path = "../benches/w1_setup/mod.rs"]
mod w1_setup;

use std::time::Instant;

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
    // Inside a pool of the thread count, as the benchmark and `convcg train` run their steps.
    pool(threads()).install(run);
}

fn run() {
    let threads = threads();
    let mut w = W1::new(threads);
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
