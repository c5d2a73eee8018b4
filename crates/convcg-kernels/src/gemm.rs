//! General matrix product on row-major slices, through faer.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::shape::check_len;

/// Whether an operand of [`gemm`] is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    /// Use the operand as stored.
    No,
    /// Use the transpose of the stored operand.
    Yes,
}

/// A row-major view of `op(s)`, an `[rows, cols]` matrix.
fn view(s: &[f32], rows: usize, cols: usize, t: Trans) -> MatRef<'_, f32> {
    match t {
        Trans::No => MatRef::from_row_major_slice(s, rows, cols),
        Trans::Yes => MatRef::from_row_major_slice(s, cols, rows).transpose(),
    }
}

/// `dst[m, n] (=|+=) alpha * op(a) · op(b)`, where `op(a)` is `[m, k]` and `op(b)` is `[k, n]`.
///
/// `a` is stored row-major as `[m, k]` when `a_t == Trans::No` and as `[k, m]` when
/// `a_t == Trans::Yes`; likewise `b` as `[k, n]` / `[n, k]`. With `Accum::Replace` the old
/// contents of `dst` are never read (they may be NaN); with `k == 0` the product is zero.
///
/// # Panics
///
/// If `dst.len() != m * n`, `a.len() != m * k` or `b.len() != k * n`.
#[track_caller]
pub fn gemm(
    dst: &mut [f32],
    m: usize,
    n: usize,
    k: usize,
    accum: Accum,
    a: &[f32],
    a_t: Trans,
    b: &[f32],
    b_t: Trans,
    alpha: f32,
    par: Par,
) {
    check_len("gemm", "dst", dst.len(), m * n);
    check_len("gemm", "a", a.len(), m * k);
    check_len("gemm", "b", b.len(), k * n);
    let dst = MatMut::from_row_major_slice_mut(dst, m, n);
    matmul(
        dst,
        accum,
        view(a, m, k, a_t),
        view(b, k, n, b_t),
        alpha,
        par,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        ACCUMS, DS, NS, assert_close, destination, naive_matmul, pars, rng, to_f64, transpose,
        uniform,
    };
    use proptest::prelude::*;

    /// Checks every storage layout, accumulation mode and parallelism for one shape.
    fn check_shape(m: usize, n: usize, k: usize, seed: u64) {
        let mut rng = rng(seed);
        let a = uniform(&mut rng, m * k);
        let b = uniform(&mut rng, k * n);
        let alpha = 0.75;
        let product: Vec<f64> = naive_matmul(&to_f64(&a), &to_f64(&b), m, k, n)
            .into_iter()
            .map(|v| f64::from(alpha) * v)
            .collect();
        let a_stored = [(a.clone(), Trans::No), (transpose(&a, m, k), Trans::Yes)];
        let b_stored = [(b.clone(), Trans::No), (transpose(&b, k, n), Trans::Yes)];
        for (a_s, a_t) in &a_stored {
            for (b_s, b_t) in &b_stored {
                for accum in ACCUMS {
                    for par in pars() {
                        let (mut dst, base) = destination(&mut rng, m * n, accum);
                        gemm(&mut dst, m, n, k, accum, a_s, *a_t, b_s, *b_t, alpha, par);
                        let expected: Vec<f64> =
                            base.iter().zip(&product).map(|(x, y)| x + y).collect();
                        let what =
                            format!("gemm m={m} n={n} k={k} {a_t:?}/{b_t:?} {accum:?} {par:?}");
                        assert_close(&what, &dst, &expected, 1e-5);
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_at_awkward_sizes() {
        for (i, &m) in NS.iter().enumerate() {
            for (j, &n) in DS.iter().enumerate() {
                for &k in &[1, 17, 128] {
                    check_shape(m, n, k, (i * 100 + j * 10 + k) as u64);
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zero() {
        let mut dst = vec![f32::NAN; 6];
        gemm(
            &mut dst,
            2,
            3,
            0,
            Accum::Replace,
            &[],
            Trans::No,
            &[],
            Trans::Yes,
            1.0,
            Par::Seq,
        );
        assert_eq!(dst, vec![0.0; 6]);
        let mut dst = vec![2.0; 6];
        gemm(
            &mut dst,
            2,
            3,
            0,
            Accum::Add,
            &[],
            Trans::Yes,
            &[],
            Trans::No,
            1.0,
            Par::rayon(2),
        );
        assert_eq!(dst, vec![2.0; 6]);
    }

    #[test]
    #[should_panic(expected = "gemm: `b` has 5 elements, expected 6")]
    fn panics_on_wrong_length() {
        let mut dst = vec![0.0; 4];
        gemm(
            &mut dst,
            2,
            2,
            3,
            Accum::Replace,
            &[0.0; 6],
            Trans::No,
            &[0.0; 5],
            Trans::No,
            1.0,
            Par::Seq,
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn matches_naive_on_random_shapes(m in 1usize..40, n in 1usize..40, k in 1usize..70, seed in any::<u64>()) {
            check_shape(m, n, k, seed);
        }
    }
}
