//! Shared helpers of the kernels' tests: awkward sizes, seeded inputs, f64 references and a
//! central-difference gradient check.

use faer::{Accum, MatRef, Par};

use crate::view::{Rows, RowsMut};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Batch sizes around SIMD and block edges.
pub(crate) const NS: [usize; 5] = [1, 3, 17, 64, 129];
/// Widths around SIMD and block edges.
pub(crate) const DS: [usize; 7] = [1, 7, 15, 16, 17, 33, 128];
pub(crate) const ACCUMS: [Accum; 2] = [Accum::Replace, Accum::Add];

pub(crate) fn pars() -> [Par; 2] {
    [Par::Seq, Par::rayon(2)]
}

pub(crate) fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// `len` values uniform in `[-1, 1)`.
pub(crate) fn uniform(rng: &mut ChaCha8Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// `data` as rows of `cols` (positive) columns; a test's buffers hold whole rows.
pub(crate) fn rows(data: &[f32], cols: usize) -> Rows<'_> {
    Rows::new(data, data.len() / cols, cols)
}

/// `data` as mutable rows of `cols` (positive) columns.
pub(crate) fn rows_mut(data: &mut [f32], cols: usize) -> RowsMut<'_> {
    let n = data.len() / cols;
    RowsMut::new(data, n, cols)
}

pub(crate) fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// A destination buffer for a kernel under `accum`, and what the kernel's result is added to.
///
/// Under `Replace` the buffer is NaN, so a kernel that reads it fails the comparison.
pub(crate) fn destination(rng: &mut ChaCha8Rng, len: usize, accum: Accum) -> (Vec<f32>, Vec<f64>) {
    match accum {
        Accum::Replace => (vec![f32::NAN; len], vec![0.0; len]),
        Accum::Add => {
            let d = uniform(rng, len);
            let base = to_f64(&d);
            (d, base)
        }
    }
}

/// Asserts `|actual - expected| <= tol * max(1, |expected|)` elementwise.
#[track_caller]
pub(crate) fn assert_close(what: &str, actual: &[f32], expected: &[f64], tol: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (f64::from(a) - e).abs();
        assert!(
            err <= tol * e.abs().max(1.0),
            "{what}[{i}]: got {a}, expected {e} (error {err:e})"
        );
    }
}

/// `s`, stored row-major as `[rows, cols]`, or as its transpose `[cols, rows]` when
/// `transposed`, as the `[rows, cols]` operand of a product.
pub(crate) fn operand(s: &[f32], rows: usize, cols: usize, transposed: bool) -> MatRef<'_, f32> {
    if transposed {
        Rows::new(s, cols, rows).mat().transpose()
    } else {
        Rows::new(s, rows, cols).mat()
    }
}

/// `a[m, k] · b[k, n]`, all row-major.
pub(crate) fn naive_matmul(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            let aip = a[i * k + p];
            for j in 0..n {
                c[i * n + j] += aip * b[p * n + j];
            }
        }
    }
    c
}

/// The transpose of the row-major `[rows, cols]` matrix `a`.
pub(crate) fn transpose<T: Copy + Default>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut t = vec![T::default(); a.len()];
    for i in 0..rows {
        for j in 0..cols {
            t[j * rows + i] = a[i * cols + j];
        }
    }
    t
}

pub(crate) fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Compares analytic gradients with central differences of `loss`, computed in f64.
///
/// `inputs[g]` is an input group (a tensor) and `analytic[g]` its gradient from the kernels.
/// An entry passes when it is within 1e-3 relative of the numerical one, with a floor of 5e-3
/// of the group's largest gradient: a wrong sign or factor of 2 is far outside that.
#[track_caller]
pub(crate) fn fd_check(
    names: &[&str],
    inputs: &[Vec<f64>],
    analytic: &[&[f32]],
    loss: impl Fn(&[Vec<f64>]) -> f64,
) {
    const STEP: f64 = 1e-5;
    assert_eq!(names.len(), inputs.len());
    assert_eq!(analytic.len(), inputs.len());
    let mut x = inputs.to_vec();
    for g in 0..inputs.len() {
        assert_eq!(analytic[g].len(), inputs[g].len(), "{}: length", names[g]);
        let numeric: Vec<f64> = (0..inputs[g].len())
            .map(|i| {
                let orig = x[g][i];
                x[g][i] = orig + STEP;
                let up = loss(&x);
                x[g][i] = orig - STEP;
                let down = loss(&x);
                x[g][i] = orig;
                (up - down) / (2.0 * STEP)
            })
            .collect();
        let scale = numeric.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (i, (&a, &e)) in analytic[g].iter().zip(&numeric).enumerate() {
            let err = (f64::from(a) - e).abs();
            assert!(
                err <= 1e-3 * e.abs().max(5e-3 * scale).max(1e-9),
                "d loss / d {}[{i}]: analytic {a}, numeric {e}",
                names[g]
            );
        }
    }
}
