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
            if has!("avx512f") && has!("avx512bw") && has!("avx512vl") && has!("avx512vnni") {
                return Self::Avx512;
            }
            Self::Avx2
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
        }
    }
}

/// The widest level the process may use: `CONVCG_SIMD` (`portable`, `avx2` or `avx512`, read once
/// per process) caps what [`SimdLevel::detect`] returns, so that the narrower paths can be run
/// and timed on a CPU that has the wider ones. Unset, there is no cap; an unknown value is
/// reported once on stderr and ignored.
pub fn simd_ceiling() -> SimdLevel {
    static CEILING: OnceLock<SimdLevel> = OnceLock::new();
    *CEILING.get_or_init(|| {
        let Ok(value) = std::env::var("CONVCG_SIMD") else {
            return SimdLevel::Avx512;
        };
        let levels = [SimdLevel::Portable, SimdLevel::Avx2, SimdLevel::Avx512];
        match levels.into_iter().find(|l| l.name() == value.trim()) {
            Some(level) => level,
            None => {
                eprintln!(
                    "warning: CONVCG_SIMD={value:?} is not one of portable, avx2, avx512; ignored"
                );
                SimdLevel::Avx512
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
