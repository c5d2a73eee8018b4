//! Run-time dispatch to code compiled for AVX2 and FMA, the only module with `unsafe`.
//!
//! The crate builds for baseline x86_64 (SSE2), so its element loops vectorise four lanes wide.
//! [`run_avx2_if`] runs a body in a function compiled with AVX2 and FMA enabled when the CPU has
//! them (checked at run time, cached by the standard library), so the same source vectorises
//! eight lanes wide there. The arithmetic is the same either way: Rust never contracts `a * b + c`
//! into a fused multiply-add on its own, and the loops that reduce keep their explicit lanes, so
//! both paths give the same bits (a test checks it).

#![allow(unsafe_code)]

use std::sync::OnceLock;

/// A family of instruction sets that code may be compiled for, from the portable baseline up.
///
/// Each level includes the ones below it: [`SimdLevel::Avx512`] means AVX-512 F, BW, VL and VNNI
/// (Intel Ice Lake and later, AMD Zen 4 and later), on top of AVX2 and FMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// No run-time dispatch: the baseline of the target (SSE2 on x86_64).
    Portable,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512 F, BW, VL and VNNI.
    Avx512,
    /// AVX-512 and AMX tiles for bf16 products (Intel Sapphire Rapids and later), the process
    /// having been granted the tile state by the OS.
    Amx,
}

impl SimdLevel {
    /// The widest level this CPU supports, lowered to the ceiling of `CONVCG_SIMD`
    /// ([`simd_ceiling`]). Detection is cached by the standard library, the ceiling read once.
    pub fn detect() -> Self {
        Self::supported().min(simd_ceiling())
    }

    /// The widest level this CPU supports, whatever `CONVCG_SIMD` says.
    pub fn supported() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            if !(has!("avx2") && has!("fma")) {
                return Self::Portable;
            }
            if !(has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni")) {
                return Self::Avx2;
            }
            if crate::amx::available() {
                return Self::Amx;
            }
            Self::Avx512
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::Portable
        }
    }

    /// The name `CONVCG_SIMD` accepts for this level.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
            Self::Amx => "amx",
        }
    }
}

/// The widest level the process may use: `CONVCG_SIMD` (`portable`, `avx2`, `avx512` or `amx`,
/// read once per process) caps what [`SimdLevel::detect`] returns, so that the narrower paths
/// can be run and timed on a CPU that has the wider ones. Unset, there is no cap; an unknown
/// value is reported once on stderr and ignored.
pub fn simd_ceiling() -> SimdLevel {
    static CEILING: OnceLock<SimdLevel> = OnceLock::new();
    *CEILING.get_or_init(|| {
        let Ok(value) = std::env::var("CONVCG_SIMD") else {
            return SimdLevel::Amx;
        };
        let levels = [
            SimdLevel::Portable,
            SimdLevel::Avx2,
            SimdLevel::Avx512,
            SimdLevel::Amx,
        ];
        match levels.into_iter().find(|l| l.name() == value.trim()) {
            Some(level) => level,
            None => {
                eprintln!(
                    "warning: CONVCG_SIMD={value:?} is not one of portable, avx2, avx512, amx; \
                     ignored"
                );
                SimdLevel::Amx
            }
        }
    })
}

/// Whether this process runs the AVX2 + FMA path.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    SimdLevel::detect() >= SimdLevel::Avx2
}

/// A piece of work to compile twice, for baseline x86_64 and for AVX2 + FMA. Implement
/// [`run`](Avx2Body::run) with `#[inline(always)]` and make everything it calls
/// `#[inline(always)]` too: only what is inlined into the AVX2 function is compiled for AVX2 (a
/// closure would not do, as the compiler keeps a large closure out of line).
pub(crate) trait Avx2Body {
    /// What the work returns.
    type Out;
    /// Does the work.
    fn run(self) -> Self::Out;
}

/// Runs `body` compiled with AVX2 and FMA when the CPU has them and `allowed` is set, else on
/// the baseline path.
#[inline(always)]
pub(crate) fn run_avx2_if<B: Avx2Body>(allowed: bool, body: B) -> B::Out {
    #[cfg(target_arch = "x86_64")]
    if allowed && has_avx2_fma() {
        // SAFETY: `avx2` only needs the CPU to support AVX2 and FMA, checked just above.
        return unsafe { avx2(body) };
    }
    body.run()
}

/// Runs `body` in a function where AVX2 and FMA instructions may be used.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<B: Avx2Body>(body: B) -> B::Out {
    body.run()
}

/// Whether this process converts to bf16 with AVX512_BF16's `vcvtne2ps2bf16`.
#[inline]
fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        SimdLevel::detect() >= SimdLevel::Avx512 && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// bf16 pairs of `lo` and `hi`: `out[j]` holds [`bf16_bits`](crate::bf16::bf16_bits) of
/// `lo[j]` in its low half and of `hi[j]` (zero without `hi`) in its high half.
///
/// # Panics
/// If the slices differ in length.
pub(crate) fn bf16_pairs(out: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    assert_eq!(out.len(), lo.len());
    assert!(hi.is_none_or(|hi| hi.len() == lo.len()));
    #[cfg(target_arch = "x86_64")]
    if has_avx512_bf16() {
        // SAFETY: the CPU has AVX-512 F and BW and AVX512_BF16, checked just above.
        return unsafe { x86::bf16_pairs(out, lo, hi) };
    }
    portable_bf16_pairs(out, lo, hi);
}

/// [`bf16_pairs`] on the portable path.
fn portable_bf16_pairs(out: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
    use crate::bf16::bf16_bits;
    match hi {
        Some(hi) => {
            for ((o, &l), &h) in out.iter_mut().zip(lo).zip(hi) {
                *o = u32::from(bf16_bits(l)) | u32::from(bf16_bits(h)) << 16;
            }
        }
        None => {
            for (o, &l) in out.iter_mut().zip(lo) {
                *o = u32::from(bf16_bits(l));
            }
        }
    }
}

/// bf16 pairs of consecutive elements of `x`: `out[p]` holds elements `2p` (low half) and
/// `2p + 1` (high half, zero past the end), the layout of a bf16 row in memory.
///
/// # Panics
/// If `out.len() != x.len().div_ceil(2)`.
pub(crate) fn bf16_row_pairs(out: &mut [u32], x: &[f32]) {
    assert_eq!(out.len(), x.len().div_ceil(2));
    #[cfg(target_arch = "x86_64")]
    if has_avx512_bf16() {
        // SAFETY: the CPU has AVX-512 F and BW and AVX512_BF16, checked just above.
        return unsafe { x86::bf16_row_pairs(out, x) };
    }
    portable_bf16_row_pairs(out, x);
}

/// [`bf16_row_pairs`] on the portable path.
fn portable_bf16_row_pairs(out: &mut [u32], x: &[f32]) {
    use crate::bf16::bf16_bits;
    for (o, pair) in out.iter_mut().zip(x.chunks(2)) {
        let hi = pair.get(1).map_or(0, |&h| bf16_bits(h));
        *o = u32::from(bf16_bits(pair[0])) | u32::from(hi) << 16;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m256bh, __m256i, __m512bh, __m512i, _mm512_cvtepu16_epi32, _mm512_cvtne2ps_pbh,
        _mm512_cvtneps_pbh, _mm512_loadu_ps, _mm512_or_si512, _mm512_slli_epi32,
        _mm512_storeu_si512,
    };

    /// [`bf16_pairs`](super::bf16_pairs), 16 pairs at a time; the tail through zero-padded
    /// copies.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) fn bf16_pairs(out: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
        let full = out.len() / 16 * 16;
        for j in (0..full).step_by(16) {
            let l = &lo[j..j + 16];
            let h = hi.map(|hi| &hi[j..j + 16]);
            pairs16(&mut out[j..j + 16], l, h);
        }
        let len = out.len() - full;
        if len > 0 {
            let (mut l, mut h) = ([0f32; 16], [0f32; 16]);
            l[..len].copy_from_slice(&lo[full..]);
            if let Some(hi) = hi {
                h[..len].copy_from_slice(&hi[full..]);
            }
            let mut buf = [0u32; 16];
            pairs16(&mut buf, &l, Some(&h));
            out[full..].copy_from_slice(&buf[..len]);
        }
    }

    /// 16 pairs of [`bf16_pairs`]: `out`, `lo` (and `hi`) are 16 long.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    #[inline]
    fn pairs16(out: &mut [u32], lo: &[f32], hi: Option<&[f32]>) {
        assert!(out.len() == 16 && lo.len() == 16 && hi.is_none_or(|h| h.len() == 16));
        // SAFETY: `lo` (and `hi`) are 16 readable f32, `out` 16 writable u32; loads and store
        // are unaligned; 16 bf16 and 16 u16 are the same 256 bits, any pattern valid for both.
        unsafe {
            let l = _mm512_cvtneps_pbh(_mm512_loadu_ps(lo.as_ptr()));
            let l = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(l));
            let pairs = match hi {
                Some(hi) => {
                    let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(hi.as_ptr()));
                    let h = _mm512_cvtepu16_epi32(std::mem::transmute::<__m256bh, __m256i>(h));
                    _mm512_or_si512(l, _mm512_slli_epi32::<16>(h))
                }
                None => l,
            };
            _mm512_storeu_si512(out.as_mut_ptr().cast::<__m512i>(), pairs);
        }
    }

    /// [`bf16_row_pairs`](super::bf16_row_pairs), 32 elements (16 pairs) at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) fn bf16_row_pairs(out: &mut [u32], x: &[f32]) {
        let mut chunks = x.chunks_exact(32);
        for (x, out) in chunks.by_ref().zip(out.chunks_exact_mut(16)) {
            // SAFETY: `x` is 32 readable f32 and `out` 16 writable u32; loads and store are
            // unaligned; 32 bf16 and 16 u32 pairs are the same 512 bits.
            unsafe {
                let lo = _mm512_loadu_ps(x.as_ptr());
                let hi = _mm512_loadu_ps(x.as_ptr().add(16));
                let bf = _mm512_cvtne2ps_pbh(hi, lo);
                _mm512_storeu_si512(
                    out.as_mut_ptr().cast::<__m512i>(),
                    std::mem::transmute::<__m512bh, __m512i>(bf),
                );
            }
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut padded = [0f32; 32];
            padded[..rest.len()].copy_from_slice(rest);
            let mut buf = [0u32; 16];
            bf16_row_pairs(&mut buf, &padded);
            let tail = &mut out[x.len() / 32 * 16..];
            let len = tail.len();
            tail.copy_from_slice(&buf[..len]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// f32 values of every class: normal, subnormal, zeros, infinities, NaNs, ties.
    fn awkward_floats(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len)
            .map(|i| match i % 8 {
                0 => f32::from_bits(rng.random()),
                1 => f32::from_bits(rng.random::<u32>() & 0x807f_ffff),
                2 => [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN][i / 8 % 5],
                3 => f32::from_bits(rng.random::<u32>() & 0xffff_0000 | 0x8000),
                4 => f32::MAX,
                _ => rng.random_range(-4.0..4.0),
            })
            .collect()
    }

    #[test]
    fn bf16_conversions_agree_on_every_path() {
        #[cfg(target_arch = "x86_64")]
        let fast = has_avx512_bf16();
        #[cfg(not(target_arch = "x86_64"))]
        let fast = false;
        eprintln!("AVX512_BF16 conversions tested: {fast}");
        for len in [0, 1, 2, 15, 16, 17, 31, 32, 33, 100] {
            let lo = awkward_floats(len, 1);
            let hi = awkward_floats(len, 2);
            let mut want = vec![0u32; len];
            let mut got = vec![0u32; len];
            for hi in [Some(hi.as_slice()), None] {
                portable_bf16_pairs(&mut want, &lo, hi);
                bf16_pairs(&mut got, &lo, hi);
                assert_eq!(got, want, "pairs, length {len}");
            }
            let mut want = vec![0u32; len.div_ceil(2)];
            let mut got = vec![0u32; len.div_ceil(2)];
            portable_bf16_row_pairs(&mut want, &lo);
            bf16_row_pairs(&mut got, &lo);
            assert_eq!(got, want, "row pairs, length {len}");
        }
    }
}
