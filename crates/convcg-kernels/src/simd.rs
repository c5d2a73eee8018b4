//! Run-time dispatch to code compiled for AVX2 and FMA, the only module with `unsafe`.
//!
//! The crate builds for baseline x86_64 (SSE2), so its element loops vectorise four lanes wide.
//! [`run_avx2_if`] runs a body in a function compiled with AVX2 and FMA enabled when the CPU has
//! them (checked at run time, cached by the standard library), so the same source vectorises
//! eight lanes wide there. The arithmetic is the same either way: Rust never contracts `a * b + c`
//! into a fused multiply-add on its own, and the loops that reduce keep their explicit lanes, so
//! both paths give the same bits (a test checks it).

#![allow(unsafe_code)]

/// Whether this CPU runs the AVX2 + FMA path.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
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
