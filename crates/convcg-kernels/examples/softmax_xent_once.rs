//! One W1-shaped softmax cross-entropy forward (or, with the argument `backward`, one forward
//! and one backward) on one thread: a fixed amount of work for instruction counting, e.g.
//! `valgrind --tool=callgrind target/release/examples/softmax_xent_once`.

use convcg_kernels::{Accum, Par, softmax_xent_backward, softmax_xent_forward};

#[path = "../benches/w1_softmax/mod.rs"]
mod w1_softmax;
use w1_softmax::{B, C, D, INV_TEMP, Inputs};

fn main() {
    let backward = std::env::args().nth(1).is_some_and(|a| a == "backward");
    let Inputs {
        users,
        cands,
        log_q,
        ids,
        weights,
    } = Inputs::new(0);
    let mut dlogits = vec![0.0f32; B * C];
    let loss = softmax_xent_forward(
        &users,
        &cands,
        B,
        C,
        D,
        INV_TEMP,
        Some(&log_q),
        &ids,
        Some(&weights),
        &mut dlogits,
        Par::Seq,
    );
    println!("loss {loss}");
    if backward {
        let mut du = vec![0.0f32; B * D];
        let mut dc = vec![0.0f32; C * D];
        softmax_xent_backward(
            &users,
            &cands,
            &dlogits,
            B,
            C,
            D,
            INV_TEMP,
            &mut du,
            Accum::Replace,
            &mut dc,
            Accum::Replace,
            Par::Seq,
        );
        println!("du[0] {} dc[0] {}", du[0], dc[0]);
    }
}
