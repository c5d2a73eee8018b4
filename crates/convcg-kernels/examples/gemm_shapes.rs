//! Times every GEMM shape of a W1 step through [`gemm`] and [`gemm_bf16`] with two threads, and
//! prints the median of 30 runs and its GFLOP/s: the way to see which product of a step runs far
//! from the machine's GEMM peak (docs/performance.md, W1's GEMM rates).
//!
//! ```sh
//! cargo run --release -p convcg-kernels --example gemm_shapes
//! ```

use std::time::Instant;

use convcg_kernels::{Accum, Bf16Engine, MatRef, Par, Rows, RowsMut, gemm, gemm_bf16};

/// How an operand is stored.
#[derive(Clone, Copy)]
enum Trans {
    /// As it is used.
    No,
    /// As its transpose.
    Yes,
}

/// `s` as the `[rows, cols]` operand `op(s)`.
fn operand(s: &[f32], rows: usize, cols: usize, t: Trans) -> MatRef<'_, f32> {
    match t {
        Trans::No => Rows::new(s, rows, cols).mat(),
        Trans::Yes => Rows::new(s, cols, rows).mat().transpose(),
    }
}

/// Median and best seconds of 30 runs of `f`.
fn median_and_best(mut f: impl FnMut()) -> (f64, f64) {
    let mut seconds: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    seconds.sort_by(f64::total_cmp);
    (seconds[seconds.len() / 2], seconds[0])
}

/// Times `dst[m, n] = op(a) · op(b)` in f32 ([`gemm`]) and with bf16 operands ([`gemm_bf16`]),
/// and prints each one's median and its GFLOP/s.
fn time(name: &str, m: usize, n: usize, k: usize, a_t: Trans, b_t: Trans, par: Par) {
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut dst = vec![0f32; m * n];
    let (a, b) = (operand(&a, m, k, a_t), operand(&b, k, n, b_t));
    let gflop = 2.0 * (m * n * k) as f64 / 1e9;
    let (f32_median, f32_best) = median_and_best(|| {
        gemm(RowsMut::new(&mut dst, m, n), Accum::Replace, a, b, 1.0, par);
    });
    let (bf16_median, _) = median_and_best(|| {
        gemm_bf16(RowsMut::new(&mut dst, m, n), Accum::Replace, a, b, 1.0, par);
    });
    println!(
        "{name:34} m={m:5} n={n:5} k={k:5}  f32 {:7.3} ms {:6.1} GFLOP/s (best {:6.1})  \
         bf16 {:7.3} ms {:6.1} GFLOP/s",
        f32_median * 1e3,
        gflop / f32_median,
        gflop / f32_best,
        bf16_median * 1e3,
        gflop / bf16_median,
    );
}

fn main() {
    use Trans::{No, Yes};
    println!(
        "bf16 products on the {} engine",
        Bf16Engine::detect().name()
    );
    let two = Par::rayon(2);
    // The loss: logits, then the gradients of the user rows and of the candidates.
    time("logits = u · cᵀ", 2048, 4096, 64, No, Yes, two);
    time("du = dlogits · c", 2048, 64, 4096, No, No, two);
    time("dc = dlogitsᵀ · u", 4096, 64, 2048, Yes, No, two);
    time(
        "dc = dlogitsᵀ · u, one thread",
        4096,
        64,
        2048,
        Yes,
        No,
        Par::Seq,
    );
    time(
        "du = dlogits · c, one thread",
        2048,
        64,
        4096,
        No,
        No,
        Par::Seq,
    );
    time("dc from a transposed copy", 4096, 64, 2048, No, No, two);
    // A pin tower (4096 rows): cross layer, MLP, head; and their backward products.
    time("cross / dx: x · w (128 x 128)", 4096, 128, 128, No, No, two);
    time("mlp 128 -> 256", 4096, 256, 128, No, No, two);
    time("mlp 256 -> 128", 4096, 128, 256, No, No, two);
    time("head 256 -> 64", 4096, 64, 256, No, No, two);
    time("dx = dy · wᵀ (128 x 128)", 4096, 128, 128, No, Yes, two);
    time("dw = xᵀ · dy (128 x 128)", 128, 128, 4096, Yes, No, two);
    time("dw = xᵀ · dy (256 x 64)", 256, 64, 4096, Yes, No, two);
    time("dw = xᵀ · dy (128 x 256)", 128, 256, 4096, Yes, No, two);
}
