//! W1's step split into its phases, as the PyTorch peer reports them: forward (towers and loss),
//! backward (the tape in reverse) and optimiser (Adam and row-wise Adagrad), each the median over
//! 20 steps after the warm-up, printed as one JSON line.
//!
//! ```sh
//! cargo run --release --example w1_phases            # all cores; CONVCG_THREADS=1 for one
//! ```

#[path = "../benches/w1_setup/mod.rs"]
mod w1_setup;

use std::time::Instant;

use w1_setup::{B, W1, threads};

const STEPS: usize = 20;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
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
    println!(
        "{{\"workload\":\"w1_phases\",\"threads\":{threads},\"steps\":{STEPS},\
         \"examples_per_s\":{:.0},\"step_ms_median\":{step_ms:.2},\"forward_ms_median\":{:.2},\
         \"backward_ms_median\":{:.2},\"optimizer_ms_median\":{:.2}}}",
        B as f64 / step_ms * 1e3,
        median(fwd),
        median(bwd),
        median(opt)
    );
}
