//! One W1-shaped softmax cross-entropy forward (or, with the argument `backward`, one forward
//! and one backward) on one thread: a fixed amount of work for instruction counting, e.g.
//! `valgrind --tool=callgrind target/release/examples/softmax_xent_once`.

use convcg_kernels::{
    Accum, InputGrad, Par, Rows, RowsMut, softmax_xent_backward, softmax_xent_forward,
};

#[path = "../benches/w1_softmax/mod.rs"]
mod w1_softmax;
use w1_softmax::{B, C, D, INV_TEMP, Inputs};

fn main() {
    let backward = std::env::args().nth(1).is_some_and(|a| a == "backward");
    let inputs = Inputs::new(0);
    let mut dlogits = vec![0.0f32; B * C];
    let out = RowsMut::new(&mut dlogits, B, C);
    let loss = softmax_xent_forward(out, inputs.users(), inputs.cands(), inputs.args(), Par::Seq);
    println!("loss {loss}");
    if backward {
        let mut du = vec![0.0f32; B * D];
        let mut dc = vec![0.0f32; C * D];
        softmax_xent_backward(
            InputGrad::new(RowsMut::new(&mut du, B, D), Accum::Replace),
            InputGrad::new(RowsMut::new(&mut dc, C, D), Accum::Replace),
            inputs.users(),
            inputs.cands(),
            Rows::new(&dlogits, B, C),
            INV_TEMP,
            Par::Seq,
        );
        println!("du[0] {} dc[0] {}", du[0], dc[0]);
    }
}
