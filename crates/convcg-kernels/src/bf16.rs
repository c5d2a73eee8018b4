//! Products with bfloat16 operands and f32 accumulation: the mixed-precision path's GEMM.
//!
//! [`gemm_bf16`] rounds both operands to bfloat16 (8 bits of mantissa, f32's exponent range) and
//! sums their products in f32. Where the CPU has AMX tiles ([`amx`](crate::amx)) the rounded
//! operands are packed as bf16 and multiplied by the tiles; elsewhere they are stored rounded in
//! f32 and multiplied by [`gemm`](fn@crate::gemm), which gives the same products (a product of
//! two bf16 values is exact in f32) summed in another order.

use std::cell::Cell;

use faer::{Accum, MatRef, Par};
use rayon::prelude::*;

use crate::amx::{self, BLOCK_COLS, BLOCK_ROWS, DEPTH};
use crate::gemm::gemm_cols;
use crate::shape::check_shape;
use crate::simd::{SimdLevel, bf16_pairs, bf16_row_pairs};
use crate::view::{Rows, RowsMut};

/// The bits of `x` rounded to bfloat16: to nearest, ties to even; f32 subnormals (below bf16's
/// normal range too) become zeros of their sign, as the hardware's conversions and products
/// treat them; NaNs stay NaN (quiet), infinities infinite, and finite values past bf16's
/// largest round to infinity.
#[inline]
pub fn bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return (bits >> 16) as u16 | 0x0040;
    }
    if bits & 0x7f80_0000 == 0 {
        return (bits >> 16) as u16 & 0x8000;
    }
    let rounding = 0x7fff + (bits >> 16 & 1);
    ((bits + rounding) >> 16) as u16
}

/// `x` rounded to bfloat16 ([`bf16_bits`]), as the f32 of the same value.
#[inline]
pub fn bf16_round(x: f32) -> f32 {
    f32::from_bits(u32::from(bf16_bits(x)) << 16)
}

/// Which engine [`gemm_bf16`] runs on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Engine {
    /// AMX tiles: bf16 operands, `tdpbf16ps`.
    Amx,
    /// Operands rounded to bf16 and kept in f32, multiplied by the f32 GEMM.
    Emulated,
}

impl Bf16Engine {
    /// The engine this process uses: AMX when the CPU has it and `CONVCG_SIMD` allows it
    /// ([`SimdLevel::Amx`]), else the emulation.
    pub fn detect() -> Self {
        if SimdLevel::detect() >= SimdLevel::Amx {
            Self::Amx
        } else {
            Self::Emulated
        }
    }

    /// A short name for logs and reports: `amx` or `emulated`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Amx => "amx",
            Self::Emulated => "emulated",
        }
    }
}

/// The precision of a kernel's matrix products.
///
/// With [`Precision::Bf16`] the products a kernel's documentation names run through
/// [`gemm_bf16`]: their operands are rounded to bfloat16 and the products summed in f32.
/// Everything else (bias, activations, elementwise parts, reductions, and the weight gradients,
/// whose left operand is stored transposed) stays in f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// Every product in f32.
    #[default]
    F32,
    /// The named products with bfloat16 operands.
    Bf16,
}

impl Precision {
    /// `dst[.., ..n] (=|+=) alpha * a · b` in this precision ([`gemm`](fn@crate::gemm) or
    /// [`gemm_bf16`]).
    #[track_caller]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gemm_cols(
        self,
        dst: RowsMut<'_>,
        n: usize,
        accum: Accum,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        alpha: f32,
        par: Par,
    ) {
        match self {
            Self::F32 => gemm_cols(dst, n, accum, a, b, alpha, par),
            Self::Bf16 => gemm_bf16_cols(Bf16Engine::detect(), dst, n, accum, a, b, alpha, par),
        }
    }

    /// `dst (=|+=) alpha * a · b` in this precision: [`gemm`](fn@crate::gemm) or [`gemm_bf16`],
    /// views, accumulation and panics as theirs.
    #[track_caller]
    pub fn gemm(
        self,
        dst: RowsMut<'_>,
        accum: Accum,
        a: MatRef<'_, f32>,
        b: MatRef<'_, f32>,
        alpha: f32,
        par: Par,
    ) {
        let n = dst.cols();
        self.gemm_cols(dst, n, accum, a, b, alpha, par);
    }
}

/// `dst[m, n] (=|+=) alpha * bf16(a) · bf16(b)`: [`gemm`](fn@crate::gemm) with both operands
/// rounded to bfloat16 ([`bf16_round`]) and their products summed in f32, on the engine of
/// [`Bf16Engine::detect`]. Views, accumulation and panics as [`gemm`](fn@crate::gemm).
///
/// The products are exact; each sum is rounded to f32 in an order that depends on the engine
/// (and, for AMX, on the hardware), so results agree between engines to f32 rounding, not bit
/// for bit. For a given engine, the same inputs and `Par` give the same bits.
#[track_caller]
pub fn gemm_bf16(
    dst: RowsMut<'_>,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    Precision::Bf16.gemm(dst, accum, a, b, alpha, par);
}

/// [`gemm_bf16`] on a chosen engine into the first `n` columns of `dst` (`n <= dst.cols()`);
/// its other columns are neither read nor written.
#[track_caller]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_bf16_cols(
    engine: Bf16Engine,
    dst: RowsMut<'_>,
    n: usize,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    let (m, ld) = dst.shape();
    assert!(n <= ld, "gemm_bf16: {n} columns do not fit in rows of {ld}");
    let k = a.ncols();
    check_shape("gemm_bf16", "a", (a.nrows(), k), (m, k));
    check_shape("gemm_bf16", "b", (b.nrows(), b.ncols()), (k, n));
    match engine {
        Bf16Engine::Amx => gemm_amx(dst, accum, a, b, alpha, par),
        Bf16Engine::Emulated => gemm_emulated(dst, n, accum, a, b, alpha, par),
    }
}

thread_local! {
    /// Packing buffers kept by each thread across calls, so that the steady state allocates
    /// nothing; taken out while in use, so a nested call on the same thread allocates its own.
    static PACKED_B: Cell<Vec<u32>> = const { Cell::new(Vec::new()) };
    static PACKED_A: Cell<(Vec<u32>, Vec<u32>)> = const { Cell::new((Vec::new(), Vec::new())) };
    static BLOCK_OUT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    static ROUNDED: Cell<(Vec<f32>, Vec<f32>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

/// The emulation: both operands rounded into row-major f32 copies, then [`gemm_cols`].
fn gemm_emulated(
    dst: RowsMut<'_>,
    n: usize,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    let (m, k) = (a.nrows(), a.ncols());
    let (mut ra, mut rb) = ROUNDED.with(Cell::take);
    round_into(&mut ra, a);
    round_into(&mut rb, b);
    gemm_cols(
        dst,
        n,
        accum,
        Rows::new(&ra, m, k).mat(),
        Rows::new(&rb, k, n).mat(),
        alpha,
        par,
    );
    ROUNDED.with(|cell| cell.set((ra, rb)));
}

/// `out` = the rounded values of `x`, row-major.
fn round_into(out: &mut Vec<f32>, x: MatRef<'_, f32>) {
    out.clear();
    out.reserve(x.nrows() * x.ncols());
    for i in 0..x.nrows() {
        match x.row(i).try_as_row_major() {
            Some(row) => out.extend(row.as_slice().iter().map(|&v| bf16_round(v))),
            None => out.extend(x.row(i).iter().map(|&v| bf16_round(v))),
        }
    }
}

/// The AMX engine: `b` packed once in VNNI layout, then blocks of [`BLOCK_ROWS`] rows of `a`
/// packed and multiplied one at a time, shared among the threads in contiguous runs of blocks.
fn gemm_amx(
    dst: RowsMut<'_>,
    accum: Accum,
    a: MatRef<'_, f32>,
    b: MatRef<'_, f32>,
    alpha: f32,
    par: Par,
) {
    let (m, ld) = dst.shape();
    let (n, k) = (b.ncols(), a.ncols());
    if m == 0 || n == 0 {
        return;
    }
    let data = dst.into_data();
    if k == 0 {
        if matches!(accum, Accum::Replace) {
            data.chunks_mut(ld).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let depth = k.next_multiple_of(DEPTH);
    let width = n.next_multiple_of(BLOCK_COLS);
    let mut packed_b = PACKED_B.with(Cell::take);
    pack_vnni(&mut packed_b, b, depth, width, par);
    let blocks = m.div_ceil(BLOCK_ROWS);
    let threads = match par {
        Par::Rayon(t) => t.get().min(blocks),
        Par::Seq => 1,
    };
    let run = |first_block: usize, rows: &mut [f32]| {
        let (mut packed_a, mut scratch) = PACKED_A.with(Cell::take);
        let mut out = BLOCK_OUT.with(Cell::take);
        packed_a.resize(BLOCK_ROWS * depth / 2, 0);
        out.resize(BLOCK_ROWS * width, 0.0);
        amx::with_tiles(|tiles| {
            for (i, dst_rows) in rows.chunks_mut(BLOCK_ROWS * ld).enumerate() {
                let r0 = (first_block + i) * BLOCK_ROWS;
                let valid = dst_rows.len().div_ceil(ld);
                pack_rows(&mut packed_a, &mut scratch, a, r0, valid, depth);
                tiles.block(&packed_a, depth, &packed_b, width, &mut out);
                for (d, c) in dst_rows.chunks_mut(ld).zip(out.chunks_exact(width)) {
                    let (d, c) = (&mut d[..n], &c[..n]);
                    match accum {
                        Accum::Replace => d.iter_mut().zip(c).for_each(|(d, c)| *d = alpha * c),
                        Accum::Add => d.iter_mut().zip(c).for_each(|(d, c)| *d += alpha * c),
                    }
                }
            }
        });
        PACKED_A.with(|cell| cell.set((packed_a, scratch)));
        BLOCK_OUT.with(|cell| cell.set(out));
    };
    if threads < 2 || m * n * k < MIN_SPLIT_FLOPS {
        run(0, data);
    } else {
        // Contiguous runs of whole blocks, one per thread.
        let per_part = blocks.div_ceil(threads);
        data.par_chunks_mut(per_part * BLOCK_ROWS * ld)
            .enumerate()
            .for_each(|(p, rows)| run(p * per_part, rows));
    }
    PACKED_B.with(|cell| cell.set(packed_b));
}

/// Below this many multiply-adds an AMX product runs on one thread.
const MIN_SPLIT_FLOPS: usize = 1 << 21;

/// Packs rows `r0..r0 + rows` of `a` (`rows <= BLOCK_ROWS`) as bf16 pairs into `out`
/// (`[BLOCK_ROWS, depth / 2]`), zero past `a`'s columns and past its last row; `scratch` is
/// reused space.
fn pack_rows(
    out: &mut [u32],
    scratch: &mut Vec<u32>,
    a: MatRef<'_, f32>,
    r0: usize,
    rows: usize,
    depth: usize,
) {
    let k = a.ncols();
    let pairs = depth / 2;
    out.fill(0);
    let a = a.subrows(r0, rows);
    if a.row_stride() == 1 && a.col_stride() != 1 {
        // Stored transposed: a row of the storage holds one column of the block. Pairs of
        // columns are converted together into a tile of TILE_PAIRS pairs x rows, which is
        // then written across the block's rows, TILE_PAIRS contiguous pairs to each.
        const TILE_PAIRS: usize = 16;
        scratch.resize(TILE_PAIRS * rows, 0);
        for p0 in (0..k.div_ceil(2)).step_by(TILE_PAIRS) {
            let tile_pairs = TILE_PAIRS.min(k.div_ceil(2) - p0);
            for (t, tile_row) in scratch.chunks_exact_mut(rows).take(tile_pairs).enumerate() {
                let p = p0 + t;
                let lo = col_slice(a, 2 * p);
                let hi = (2 * p + 1 < k).then(|| col_slice(a, 2 * p + 1));
                bf16_pairs(tile_row, lo, hi);
            }
            for (i, out) in out.chunks_exact_mut(pairs).take(rows).enumerate() {
                for (t, o) in out[p0..p0 + tile_pairs].iter_mut().enumerate() {
                    *o = scratch[t * rows + i];
                }
            }
        }
    } else {
        let mut row = Vec::new();
        for (i, out) in out.chunks_exact_mut(pairs).take(rows).enumerate() {
            bf16_row_pairs(&mut out[..k.div_ceil(2)], row_slice(a, i, &mut row));
        }
    }
}

/// Column `j` of `x`, whose column elements are contiguous (`x.row_stride() == 1`).
fn col_slice(x: MatRef<'_, f32>, j: usize) -> &[f32] {
    x.col(j)
        .try_as_col_major()
        .map(|c| c.as_slice())
        .unwrap_or_else(|| unreachable!("the caller checked the row stride"))
}

/// Packs `b` (`[k, n]`) as bf16 pairs in VNNI layout into `out` (`[depth / 2, width]`): pair
/// `(p, j)` holds `b[2p, j]` and `b[2p + 1, j]`, zero past `b`'s rows and columns.
fn pack_vnni(out: &mut Vec<u32>, b: MatRef<'_, f32>, depth: usize, width: usize, par: Par) {
    let (k, n) = (b.nrows(), b.ncols());
    out.clear();
    out.resize(depth / 2 * width, 0);
    if b.row_stride() == 1 && b.col_stride() != 1 {
        // Stored transposed: each column is contiguous, its pairs adjacent.
        let mut pairs = vec![0u32; k.div_ceil(2)];
        for j in 0..n {
            bf16_row_pairs(&mut pairs, col_slice(b, j));
            for (p, &pair) in pairs.iter().enumerate() {
                out[p * width + j] = pair;
            }
        }
    } else {
        let pack_pair = |rows: &mut (Vec<f32>, Vec<f32>), (p, out): (usize, &mut [u32])| {
            let lo = row_slice(b, 2 * p, &mut rows.0);
            let hi = (2 * p + 1 < k).then(|| row_slice(b, 2 * p + 1, &mut rows.1));
            bf16_pairs(&mut out[..n], lo, hi);
        };
        let pair_rows = out.chunks_exact_mut(width).take(k.div_ceil(2)).enumerate();
        match par {
            // Long operands (a weight gradient's) are packed by every thread.
            Par::Rayon(t) if t.get() > 1 && k * n >= MIN_PARALLEL_PACK => out
                .par_chunks_exact_mut(width)
                .take(k.div_ceil(2))
                .enumerate()
                .for_each_init(|| (Vec::new(), Vec::new()), pack_pair),
            _ => {
                let mut rows = (Vec::new(), Vec::new());
                pair_rows.for_each(|pair| pack_pair(&mut rows, pair));
            }
        }
    }
}

/// Fewest elements of `b` packed by several threads.
const MIN_PARALLEL_PACK: usize = 1 << 16;

/// Row `i` of `x` as a slice: borrowed when contiguous, else copied into `buf`.
fn row_slice<'a>(x: MatRef<'a, f32>, i: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
    match x.row(i).try_as_row_major() {
        Some(r) => r.as_slice(),
        None => {
            buf.clear();
            buf.extend(x.row(i).iter().copied());
            buf
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ACCUMS, destination, operand, pars, rng, transpose, uniform};

    /// Every engine this CPU runs.
    fn engines() -> Vec<Bf16Engine> {
        let mut engines = vec![Bf16Engine::Emulated];
        if SimdLevel::supported() >= SimdLevel::Amx {
            engines.push(Bf16Engine::Amx);
        }
        eprintln!("bf16 engines tested on this CPU: {engines:?}");
        engines
    }

    #[test]
    fn rounding_is_to_nearest_even_with_subnormals_flushed() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
        assert_eq!(bf16_round(1.0 + f32::powi(2.0, -8)), 1.0);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to 1 + 2^-6 (even).
        assert_eq!(
            bf16_round(1.0 + 3.0 * f32::powi(2.0, -8)),
            1.0 + f32::powi(2.0, -6)
        );
        assert_eq!(
            bf16_round(1.0 + f32::powi(2.0, -8) + f32::powi(2.0, -20)),
            1.0 + f32::powi(2.0, -7)
        );
        assert_eq!(bf16_round(-3.0), -3.0);
        assert_eq!(bf16_bits(f32::from_bits(1)), 0);
        assert_eq!(bf16_bits(-f32::from_bits(0x007f_ffff)), 0x8000);
        assert_eq!(bf16_round(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
        assert!(bf16_round(f32::NAN).is_nan());
        assert_eq!(bf16_round(f32::INFINITY), f32::INFINITY);
        assert_eq!(bf16_round(f32::MAX), f32::INFINITY);
        // Every bf16 value is its own rounding.
        for bits in (0u16..=u16::MAX).step_by(7) {
            let x = f32::from_bits(u32::from(bits) << 16);
            if x.is_finite() && (x == 0.0 || x.abs() >= f32::MIN_POSITIVE) {
                assert_eq!(bf16_round(x).to_bits(), x.to_bits(), "{bits:#x}");
            }
        }
    }

    /// The f64 product of the rounded operands, and the sum of the magnitudes of its terms (the
    /// scale of the f32 summation error).
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> (Vec<f64>, Vec<f64>) {
        let r = |x: f32| f64::from(bf16_round(x));
        let mut value = vec![0.0; m * n];
        let mut magnitude = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let t = r(a[i * k + p]) * r(b[p * n + j]);
                    value[i * n + j] += t;
                    magnitude[i * n + j] += t.abs();
                }
            }
        }
        (value, magnitude)
    }

    #[test]
    fn every_engine_matches_the_rounded_reference_at_awkward_sizes() {
        let mut rng = rng(21);
        for (m, n, k) in [
            (1, 1, 1),
            (3, 17, 5),
            (31, 33, 31),
            (32, 32, 32),
            (33, 15, 65),
            (70, 64, 128),
            (5, 3, 300),
        ] {
            let a = uniform(&mut rng, m * k);
            let b = uniform(&mut rng, k * n);
            let (value, magnitude) = reference(&a, &b, m, k, n);
            let alpha = 0.5;
            for engine in engines() {
                for (a_t, b_t) in [(false, false), (true, false), (false, true), (true, true)] {
                    let a_s = if a_t { transpose(&a, m, k) } else { a.clone() };
                    let b_s = if b_t { transpose(&b, k, n) } else { b.clone() };
                    let (a_v, b_v) = (operand(&a_s, m, k, a_t), operand(&b_s, k, n, b_t));
                    for accum in ACCUMS {
                        for par in pars() {
                            let (mut dst, base) = destination(&mut rng, m * n, accum);
                            let out = RowsMut::new(&mut dst, m, n);
                            gemm_bf16_cols(engine, out, n, accum, a_v, b_v, alpha, par);
                            for i in 0..m * n {
                                let want = base[i] + 0.5 * value[i];
                                // f32 rounding of k sums, of the alpha product and the add.
                                let tol = (k as f64 + 3.0)
                                    * f64::powi(2.0, -24)
                                    * (0.5 * magnitude[i] + base[i].abs())
                                    + 1e-30;
                                let got = f64::from(dst[i]);
                                assert!(
                                    (got - want).abs() <= tol,
                                    "{engine:?} m={m} n={n} k={k} transposed {a_t}/{b_t} \
                                     {accum:?} {par:?} element {i}: {got} against {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn zero_depth_and_columns_past_n_are_handled() {
        let mut rng = rng(23);
        for engine in engines() {
            let a: Vec<f32> = Vec::new();
            let b: Vec<f32> = Vec::new();
            let mut dst = vec![1.0f32; 6];
            let out = RowsMut::new(&mut dst, 2, 3);
            let (a_v, b_v) = (Rows::new(&a, 2, 0).mat(), Rows::new(&b, 0, 3).mat());
            gemm_bf16_cols(engine, out, 3, Accum::Replace, a_v, b_v, 1.0, Par::Seq);
            assert_eq!(dst, vec![0.0; 6], "{engine:?}");
            // 5 columns of rows 8 wide: the last 3 of each row stay as they were.
            let (m, n, k, ld) = (40, 5, 9, 8);
            let a = uniform(&mut rng, m * k);
            let b = uniform(&mut rng, k * n);
            let (value, _) = reference(&a, &b, m, k, n);
            for accum in ACCUMS {
                let mut dst = vec![7.0f32; m * ld];
                let out = RowsMut::new(&mut dst, m, ld);
                let (a_v, b_v) = (Rows::new(&a, m, k).mat(), Rows::new(&b, k, n).mat());
                gemm_bf16_cols(engine, out, n, accum, a_v, b_v, 1.0, Par::rayon(2));
                for i in 0..m {
                    for j in 0..ld {
                        let got = f64::from(dst[i * ld + j]);
                        let want = match (j < n, accum) {
                            (false, _) => 7.0,
                            (true, Accum::Replace) => value[i * n + j],
                            (true, Accum::Add) => 7.0 + value[i * n + j],
                        };
                        assert!((got - want).abs() < 1e-5, "{engine:?} {accum:?} ({i}, {j})");
                    }
                }
            }
        }
    }

    #[test]
    fn engines_are_deterministic_across_thread_counts() {
        let mut rng = rng(22);
        let (m, n, k) = (300, 64, 256);
        let a = uniform(&mut rng, m * k);
        let b = uniform(&mut rng, k * n);
        for engine in engines() {
            let run = |par| {
                let mut dst = vec![0.0f32; m * n];
                let (a_v, b_v) = (Rows::new(&a, m, k).mat(), Rows::new(&b, k, n).mat());
                let out = RowsMut::new(&mut dst, m, n);
                gemm_bf16_cols(engine, out, n, Accum::Replace, a_v, b_v, 1.0, par);
                dst.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            };
            if engine == Bf16Engine::Amx {
                // Blocks of rows are computed alike whichever thread takes them.
                assert_eq!(run(Par::Seq), run(Par::rayon(2)), "{engine:?}");
                assert_eq!(run(Par::Seq), run(Par::rayon(3)), "{engine:?}");
            }
            assert_eq!(run(Par::rayon(2)), run(Par::rayon(2)), "{engine:?}");
        }
    }
}
