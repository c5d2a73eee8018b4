//! Run-time dispatch to code compiled for AVX2 and FMA, the only module with `unsafe`.
//!
//! The crate builds for baseline x86_64 (SSE2), so its element loops vectorise four lanes wide.
//! [`with_avx2`] runs a body in a function compiled with AVX2 and FMA enabled when the CPU has
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

/// Runs `body` compiled with AVX2 and FMA when the CPU has them, else as it is. `body` should
/// call `#[inline(always)]` code, so that it is compiled into the AVX2 function.
#[inline(always)]
pub(crate) fn with_avx2<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: `avx2` only needs the CPU to support AVX2 and FMA, checked just above.
        return unsafe { avx2(body) };
    }
    body()
}

/// Runs `body` in a function where AVX2 and FMA instructions may be used.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}
