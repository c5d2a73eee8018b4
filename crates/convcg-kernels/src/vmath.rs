//! Elementwise `e^x` and `ln x` in f32 written so that loops over them vectorise on baseline
//! SSE2: plain arithmetic, compares and integer bit operations, no calls. Results are the same
//! bits whether a loop is vectorised or not, on every x86-64 CPU (no fused multiply-adds).

/// `e^x` in f32 with a relative error below about 3e-7 for `x` in `[-87.3, 88]`, written with
/// plain arithmetic, compares and integer bit operations only, so that loops over it vectorise
/// on baseline SSE2 (no FMA, no rounding instructions, no calls).
///
/// `x = n ln 2 + r` with `n` the nearest integer of `x / ln 2` (rounded by adding and taking
/// away 1.5 * 2^23) and `|r| <= ln 2 / 2` (Cody-Waite: `ln 2` in two parts, the first exact in
/// a few bits so that `n * LN2_HI` is exact); `e^r ~= 1 + r + r^2 P(r)` with the minimax
/// polynomial `P` of Cephes' `expf`; `2^n` is built in the exponent bits. Below
/// `ln(f32::MIN_POSITIVE)` (about -87.34), where `e^x` would be subnormal, the result is
/// exactly 0, `-inf` included; above 88 it is `e^88`; NaN gives NaN.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LO: f32 = -87.336_55;
    const HI: f32 = 88.0;
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];
    // Written as selects, not `f32::clamp`, so that they map to maxps/minps and keep NaN.
    let xc = if x < LO { LO } else { x };
    let xc = if xc > HI { HI } else { xc };
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let poly = P[1..].iter().fold(P[0], |acc, &p| acc * r + p);
    let er = (poly * (r * r) + r) + 1.0;
    // The low bits of t hold n: 2^n has the exponent field n + 127.
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits() - 127) << 23);
    let y = er * two_n;
    if x < LO { 0.0 } else { y }
}

/// `ln x` in f32 for positive normal `x`, with an absolute error below about 2e-7 for `x` in
/// `[0.5, 2]` and a relative error below about 3e-7 elsewhere: `x = 2^k m` with `m` in
/// `[sqrt(1/2), sqrt(2))` from the bits, and `ln m = 2 atanh(z)`, `z = (m - 1) / (m + 1)`
/// (`|z| <= 0.172`), by its series to `z^9`. Zero, negative, subnormal, infinite or NaN `x` give
/// unspecified finite or non-finite values.
#[inline(always)]
pub fn fast_ln(x: f32) -> f32 {
    const SQRT2: f32 = std::f32::consts::SQRT_2;
    let bits = x.to_bits();
    let k = ((bits >> 23) as i32 - 127) as f32;
    let m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    let (m, k) = if m > SQRT2 {
        (m * 0.5, k + 1.0)
    } else {
        (m, k)
    };
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let series = 1.0 + z2 * (1.0 / 3.0 + z2 * (0.2 + z2 * (1.0 / 7.0 + z2 * (1.0 / 9.0))));
    k * std::f32::consts::LN_2 + 2.0 * z * series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_over_its_range() {
        // Dense over the softmax's range (x = l - max <= 0) and sparser up to 88.
        let points = (0..=2_000_000)
            .map(|k| -87.3 + 87.3 * k as f64 / 2e6)
            .chain((0..=100_000).map(|k| 88.0 * k as f64 / 1e5));
        for x in points {
            let x = x as f32;
            let want = f64::from(x).exp();
            let rel = ((f64::from(fast_exp(x)) - want) / want).abs();
            assert!(rel <= 3e-7, "fast_exp({x}): relative error {rel:e}");
        }
        assert_eq!(fast_exp(0.0), 1.0);
        for x in [-87.4f32, -88.0, -100.0, -1e4, f32::MIN, f32::NEG_INFINITY] {
            assert_eq!(fast_exp(x).to_bits(), 0.0f32.to_bits(), "fast_exp({x})");
        }
        assert!(fast_exp(f32::NAN).is_nan());
    }

    #[test]
    fn fast_ln_is_accurate_over_its_range() {
        let points = (0..=2_000_000)
            .map(|k| 10f64.powf(-30.0 + 60.0 * k as f64 / 2e6))
            .chain((0..=100_000).map(|k| 0.5 + 1.5 * k as f64 / 1e5));
        for x in points {
            let x = x as f32;
            let want = f64::from(x).ln();
            let err = (f64::from(fast_ln(x)) - want).abs();
            let bound = if (0.5..=2.0).contains(&x) {
                2e-7
            } else {
                3e-7 * want.abs()
            };
            assert!(err <= bound, "fast_ln({x}): error {err:e}");
        }
        assert_eq!(fast_ln(1.0), 0.0);
    }
}
