//! One W1-shaped softmax cross-entropy forward (or, with the argument `backward`, one forward
//! and one backward) on one thread: a fixed amount of work for instruction counting, e.g.
//! `valgrind --tool=callgrind target/release/examples/softmax_xent_once`.

use convcg_kernels::Par;

#[path = "../benches/w1_softmax/mod.rs"]
mod w1_softmax;
use w1_softmax::{Grads, Inputs};

fn main() {
    let backward = std::env::args().nth(1).is_some_and(|a| a == "backward");
    let inputs = Inputs::new(0);
    let mut grads = Grads::default();
    let loss = inputs.forward(&mut grads, Par::Seq);
    println!("loss {loss}");
    if backward {
        inputs.backward(&mut grads, Par::Seq);
        println!("du[0] {} dc[0] {}", grads.du[0], grads.dc[0]);
    }
}
