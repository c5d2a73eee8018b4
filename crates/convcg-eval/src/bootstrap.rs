//! Paired bootstrap intervals over queries: what a comparison of two retrievers prints beside
//! every recall delta and every online lift (docs/design.md, Intervals: a difference inside its
//! interval is not a result).
//!
//! Both retrievers were scored on the same queries, so a resample draws `n` query indices with
//! replacement and takes *both* retrievers' values of each drawn query (the pairing), and a ratio
//! metric's numerator and denominator of each drawn query together. The interval is the
//! percentile interval of the resampled statistic (nearest rank), from a seeded ChaCha8 stream:
//! the same inputs give the same interval on every machine.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How intervals are drawn: resamples of the queries, the interval's coverage and the seed of
/// the draws. The default (2,000 resamples, 95%, seed 17) is what `convcg compare`, `ablate` and
/// `headroom` print.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Resamples of the queries.
    pub resamples: usize,
    /// Coverage of the percentile interval, in (0, 1).
    pub level: f64,
    /// ChaCha8 seed of the draws.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            resamples: 2000,
            level: 0.95,
            seed: 17,
        }
    }
}

/// A paired bootstrap's estimate and its percentile interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInterval {
    /// The statistic on all pairs: `mean(a - b)` for [`Bootstrap::mean_difference`], the lift in
    /// percent for [`Bootstrap::lift`].
    pub mean: f64,
    /// The lower percentile of the resampled statistics.
    pub low: f64,
    /// The upper percentile of the resampled statistics.
    pub high: f64,
}

impl BootstrapInterval {
    /// Whether the interval holds 0: the difference is not a result.
    pub fn covers_zero(&self) -> bool {
        self.low <= 0.0 && self.high >= 0.0
    }

    /// `[low, high]` with signs and `digits` decimals, each followed by `unit` (e.g. `%`), and
    /// ` (n.s.)` when the interval holds 0: `[+0.0031, +0.0262]`, `[-1.2%, +2.0%] (n.s.)`.
    pub fn bracket(&self, digits: usize, unit: &str) -> String {
        let ns = if self.covers_zero() { " (n.s.)" } else { "" };
        format!(
            "[{:+.digits$}{unit}, {:+.digits$}{unit}]{ns}",
            self.low, self.high
        )
    }
}

/// One side of a ratio metric over queries: per query, what its numerator and its denominator
/// add (conversion volume: conversions and 1; impression-to-conversion: conversions and
/// impressions; RoAS: value and cost). The metric is `sum(num) / sum(den)`.
#[derive(Clone, Copy, Debug)]
pub struct RatioParts<'a> {
    /// Per query, its share of the numerator.
    pub num: &'a [f64],
    /// Per query, its share of the denominator.
    pub den: &'a [f64],
}

impl Bootstrap {
    /// The number of queries every column holds.
    fn check(&self, lengths: &[usize]) -> Result<usize> {
        let n = lengths.first().copied().unwrap_or(0);
        if n == 0 || lengths.iter().any(|&l| l != n) {
            return Err(Error::BootstrapColumns {
                lengths: lengths.to_vec(),
            });
        }
        if self.resamples == 0 || !(self.level > 0.0 && self.level < 1.0) {
            return Err(Error::BootstrapSettings {
                resamples: self.resamples,
                level: self.level.to_string(),
            });
        }
        Ok(n)
    }

    /// The paired bootstrap of `mean(a[i] - b[i])`: `resamples` draws of `n` indices with
    /// replacement, and the `(1 - level) / 2` and `(1 + level) / 2` percentiles (nearest rank)
    /// of the resampled means.
    ///
    /// # Errors
    /// If `a` and `b` differ in length or are empty, or the settings are out of range.
    pub fn mean_difference(&self, a: &[f64], b: &[f64]) -> Result<BootstrapInterval> {
        let mut out = self.mean_differences(&[(a, b)])?;
        out.pop().ok_or(Error::NonFiniteBootstrap)
    }

    /// [`Bootstrap::mean_difference`] of several pairs of columns over the same queries at once
    /// (recall@K at every K): every resample's indices serve every pair, so the intervals are
    /// those of one resampling of the queries.
    ///
    /// # Errors
    /// If `pairs` is empty, any column differs in length from the first or is empty, the
    /// settings are out of range, or a column's values are not finite.
    pub fn mean_differences(&self, pairs: &[(&[f64], &[f64])]) -> Result<Vec<BootstrapInterval>> {
        let lengths: Vec<usize> = pairs.iter().flat_map(|(a, b)| [a.len(), b.len()]).collect();
        let n = self.check(&lengths)?;
        let diffs: Vec<Vec<f64>> = pairs
            .iter()
            .map(|(a, b)| a.iter().zip(*b).map(|(x, y)| x - y).collect())
            .collect();
        let columns: Vec<&[f64]> = diffs.iter().map(Vec::as_slice).collect();
        let drawn = drawn_sums(&columns, n, self.resamples, self.seed);
        let all = sums_over(&columns, 0..n);
        (0..pairs.len())
            .map(|c| {
                let stats = drawn.iter().map(|s| s[c] / n as f64).collect();
                interval_of(all[c] / n as f64, stats, self.level).ok_or(Error::NonFiniteBootstrap)
            })
            .collect()
    }

    /// The paired bootstrap of the lift in percent of a ratio metric,
    /// `100 ((sum(new.num) / sum(new.den)) / (sum(base.num) / sum(base.den)) - 1)`: each resample
    /// draws `n` query indices with replacement and sums all four columns over them, so a
    /// query's numerator and denominator, and its base and new values, stay together. The
    /// interval is the `(1 - level) / 2` and `(1 + level) / 2` percentiles (nearest rank) of the
    /// resampled lifts; resamples where the lift is undefined (a base ratio or a denominator of
    /// 0) are left out. `None` when the lift on all queries is undefined, or on more than half
    /// of the resamples.
    ///
    /// # Errors
    /// If the four columns differ in length or are empty, or the settings are out of range.
    pub fn lift(
        &self,
        base: RatioParts<'_>,
        new: RatioParts<'_>,
    ) -> Result<Option<BootstrapInterval>> {
        let mut out = self.lifts(&[(base, new)])?;
        Ok(out.pop().flatten())
    }

    /// [`Bootstrap::lift`] of several ratio metrics over the same queries at once (conversion
    /// volume, impression-to-conversion and RoAS): every resample's indices serve every metric.
    ///
    /// # Errors
    /// As [`Bootstrap::lift`], for any column; and if `pairs` is empty.
    pub fn lifts(
        &self,
        pairs: &[(RatioParts<'_>, RatioParts<'_>)],
    ) -> Result<Vec<Option<BootstrapInterval>>> {
        let columns: Vec<&[f64]> = pairs
            .iter()
            .flat_map(|(base, new)| [new.num, new.den, base.num, base.den])
            .collect();
        let lengths: Vec<usize> = columns.iter().map(|c| c.len()).collect();
        let n = self.check(&lengths)?;
        let drawn = drawn_sums(&columns, n, self.resamples, self.seed);
        let all = sums_over(&columns, 0..n);
        Ok((0..pairs.len())
            .map(|p| {
                let of = |s: &[f64]| lift_of(&s[4 * p..4 * p + 4]);
                let estimate = of(&all);
                if !estimate.is_finite() {
                    return None;
                }
                interval_of(estimate, drawn.iter().map(|s| of(s)).collect(), self.level)
            })
            .collect())
    }
}

/// The sums of every column over one resample's indices (in draw order).
fn sums_over(columns: &[&[f64]], indices: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut sums = vec![0.0; columns.len()];
    for i in indices {
        for (s, c) in sums.iter_mut().zip(columns) {
            *s += c[i];
        }
    }
    sums
}

/// `resamples` draws of `n` indices with replacement from ChaCha8 seeded with `seed`, each
/// reduced to the sums of every column over its indices: one draw serves every column, so
/// statistics of several columns are resampled jointly.
fn drawn_sums(columns: &[&[f64]], n: usize, resamples: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..resamples)
        .map(|_| sums_over(columns, (0..n).map(|_| rng.random_range(0..n))))
        .collect()
}

/// The `(1 - level) / 2` and `(1 + level) / 2` percentiles (nearest rank: the `ceil(p m)`-th
/// smallest of `m`) of the finite values of `stats`, around `estimate`; `None` when fewer than
/// half of them are finite (a statistic undefined on most resamples has no interval).
fn interval_of(estimate: f64, mut stats: Vec<f64>, level: f64) -> Option<BootstrapInterval> {
    let drawn = stats.len();
    stats.retain(|x| x.is_finite());
    let m = stats.len();
    if m == 0 || 2 * m < drawn {
        return None;
    }
    stats.sort_unstable_by(f64::total_cmp);
    let at = |p: f64| stats[((p * m as f64).ceil() as usize).clamp(1, m) - 1];
    Some(BootstrapInterval {
        mean: estimate,
        low: at((1.0 - level) / 2.0),
        high: at((1.0 + level) / 2.0),
    })
}

/// The lift in percent of `new` over `base` from the sums `[new num, new den, base num, base
/// den]`: `100 ((new num / new den) / (base num / base den) - 1)`; NaN where a denominator or the
/// base's ratio is not positive (as [`crate::lift_percent`] leaves it undefined).
fn lift_of(s: &[f64]) -> f64 {
    let (nn, nd, bn, bd) = (s[0], s[1], s[2], s[3]);
    if nd > 0.0 && bd > 0.0 && bn > 0.0 {
        100.0 * ((nn / nd) / (bn / bd) - 1.0)
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(resamples: usize, level: f64, seed: u64) -> Bootstrap {
        Bootstrap {
            resamples,
            level,
            seed,
        }
    }

    /// Every ordered resample of 3 queries: the 27 index triples, each as likely as the others.
    fn all_triples() -> Vec<[usize; 3]> {
        (0..27).map(|t| [t / 9, t / 3 % 3, t % 3]).collect()
    }

    fn assert_near(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
    }

    // Three queries of a ratio metric, e.g. conversions over impressions:
    //   query        0  1  2
    //   base num     1  1  2      base ratio on all queries 4/5
    //   base den     1  2  2
    //   new num      2  1  2      new ratio on all queries 5/6
    //   new den      1  1  4      lift 100 ((5/6) / (4/5) - 1) = +25/6 % (+4.17%)
    // A resample that draws query i c_i times has new ratio (2c0 + c1 + 2c2) / (c0 + c1 + 4c2)
    // and base ratio (c0 + c1 + 2c2) / (c0 + 2c1 + 2c2). By hand, with the number of ordered
    // triples (3! / (c0! c1! c2!)) of each count vector:
    //   (c0,c1,c2)  ways   new    base   lift %
    //   (0,0,3)      1     1/2    1      -50
    //   (0,1,2)      3     5/9    5/6    -100/3
    //   (1,0,2)      3     2/3    1      -100/3
    //   (0,2,1)      3     2/3    2/3    0
    //   (2,0,1)      3     1      1      0
    //   (1,1,1)      6     5/6    4/5    +25/6
    //   (0,3,0)      1     1      1/2    +100
    //   (3,0,0)      1     2      1      +100
    //   (1,2,0)      3     4/3    3/5    +1100/9
    //   (2,1,0)      3     5/3    3/4    +1100/9
    // Sorted, the 27 lifts take ranks 1 (-50), 2-7 (-100/3), 8-13 (0), 14-19 (+25/6),
    // 20-21 (+100), 22-27 (+1100/9). At level 0.8 the nearest ranks are ceil(0.1 x 27) = 3 and
    // ceil(0.9 x 27) = 25: the interval is [-100/3, +1100/9] around +25/6. At level 0.46 they
    // are ceil(0.27 x 27) = ceil(7.29) = 8 and ceil(0.73 x 27) = ceil(19.71) = 20: [0, +100]
    // (rounding down instead would give ranks 7 and 19, [-100/3, +25/6]).
    const BASE_NUM: [f64; 3] = [1.0, 1.0, 2.0];
    const BASE_DEN: [f64; 3] = [1.0, 2.0, 2.0];
    const NEW_NUM: [f64; 3] = [2.0, 1.0, 2.0];
    const NEW_DEN: [f64; 3] = [1.0, 1.0, 4.0];

    #[test]
    fn the_lift_interval_over_all_27_resamples_of_three_queries_is_the_hand_computed_one() {
        let columns: [&[f64]; 4] = [&NEW_NUM, &NEW_DEN, &BASE_NUM, &BASE_DEN];
        let lifts: Vec<f64> = all_triples()
            .iter()
            .map(|t| lift_of(&sums_over(&columns, t.iter().copied())))
            .collect();
        let mut sorted = lifts.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let want: Vec<f64> = [
            (-50.0, 1),
            (-100.0 / 3.0, 6),
            (0.0, 6),
            (25.0 / 6.0, 6),
            (100.0, 2),
            (1100.0 / 9.0, 6),
        ]
        .iter()
        .flat_map(|&(v, c)| std::iter::repeat_n(v, c))
        .collect();
        for (got, want) in sorted.iter().zip(&want) {
            assert_near(*got, *want);
        }
        let ci = interval_of(25.0 / 6.0, lifts.clone(), 0.8).unwrap();
        assert_near(ci.mean, 25.0 / 6.0);
        assert_near(ci.low, -100.0 / 3.0);
        assert_near(ci.high, 1100.0 / 9.0);
        let narrow = interval_of(25.0 / 6.0, lifts, 0.46).unwrap();
        assert_near(narrow.low, 0.0);
        assert_near(narrow.high, 100.0);
    }

    #[test]
    fn the_drawn_lift_interval_converges_to_the_hand_computed_one() {
        // With many draws the empirical 10th and 90th percentiles fall on the same values as
        // the exact distribution above: the cumulative shares around them are 1/27 | 7/27 and
        // 21/27 | 27/27, far (> 0.06) from 0.1 and 0.9 beside the draws' noise (about 0.002).
        let ci = settings(20_000, 0.8, 5)
            .lift(
                RatioParts {
                    num: &BASE_NUM,
                    den: &BASE_DEN,
                },
                RatioParts {
                    num: &NEW_NUM,
                    den: &NEW_DEN,
                },
            )
            .unwrap()
            .unwrap();
        assert_near(ci.mean, 25.0 / 6.0);
        assert_near(ci.low, -100.0 / 3.0);
        assert_near(ci.high, 1100.0 / 9.0);
        assert!(ci.covers_zero());
        assert_eq!(ci.bracket(1, "%"), "[-33.3%, +122.2%] (n.s.)");
    }

    #[test]
    fn the_mean_difference_interval_of_three_queries_is_the_hand_computed_one() {
        // a - b = [0, 0, 3]: a resample's mean is the number of times it drew query 2, which is
        // 0, 1, 2 or 3 with probabilities 8, 12, 6 and 1 in 27. The 10th percentile is 0 (8/27 =
        // 0.30 >= 0.1) and the 90th is 2 (20/27 = 0.74 < 0.9 <= 26/27): the interval [0, 2]
        // around the mean 1, exactly over the 27 triples and with many draws alike.
        let (a, b) = ([1.0, 2.0, 4.0], [1.0, 2.0, 1.0]);
        let diff = [0.0, 0.0, 3.0];
        let means: Vec<f64> = all_triples()
            .iter()
            .map(|t| sums_over(&[&diff], t.iter().copied())[0] / 3.0)
            .collect();
        let exact = interval_of(1.0, means, 0.8).unwrap();
        assert_eq!((exact.low, exact.high), (0.0, 2.0));
        let drawn = settings(20_000, 0.8, 1).mean_difference(&a, &b).unwrap();
        assert_eq!(drawn, exact);
    }

    #[test]
    fn a_retriever_against_itself_has_a_zero_interval() {
        let x: Vec<f64> = (0..50).map(|i| f64::from(i % 7) / 3.0).collect();
        let ci = settings(200, 0.95, 0).mean_difference(&x, &x).unwrap();
        assert_eq!((ci.mean, ci.low, ci.high), (0.0, 0.0, 0.0));
        assert!(ci.covers_zero());
        let side = RatioParts { num: &x, den: &x };
        let lift = settings(200, 0.95, 0).lift(side, side).unwrap().unwrap();
        assert_eq!((lift.mean, lift.low, lift.high), (0.0, 0.0, 0.0));
        assert_eq!(lift.bracket(1, "%"), "[+0.0%, +0.0%] (n.s.)");
    }

    #[test]
    fn an_undefined_lift_has_no_interval() {
        let zero = [0.0, 0.0];
        let one = [1.0, 1.0];
        let base = RatioParts {
            num: &zero,
            den: &one,
        };
        let new = RatioParts {
            num: &one,
            den: &one,
        };
        assert_eq!(settings(100, 0.95, 0).lift(base, new).unwrap(), None);
        // Base conversions in one query of 40: most resamples draw it, some do not; those are
        // left out, and the interval stays defined.
        let mut few = vec![0.0; 40];
        few[7] = 1.0;
        let ones = vec![1.0; 40];
        let ci = settings(500, 0.95, 0)
            .lift(
                RatioParts {
                    num: &few,
                    den: &ones,
                },
                RatioParts {
                    num: &ones,
                    den: &ones,
                },
            )
            .unwrap()
            .unwrap();
        assert_near(ci.mean, 3900.0);
        assert!(ci.low > 0.0 && ci.high >= ci.low, "{ci:?}");
    }

    #[test]
    fn joint_intervals_equal_the_single_ones() {
        let a: Vec<f64> = (0..101).map(|i| f64::from(i % 5)).collect();
        let b: Vec<f64> = (0..101).map(|i| f64::from(i % 3)).collect();
        let both = settings(300, 0.9, 4)
            .mean_differences(&[(&a, &b), (&b, &a)])
            .unwrap();
        assert_eq!(
            both[0],
            settings(300, 0.9, 4).mean_difference(&a, &b).unwrap()
        );
        assert_eq!(
            both[1],
            settings(300, 0.9, 4).mean_difference(&b, &a).unwrap()
        );
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_separates_a_clear_difference() {
        // 997 pairs (an awkward size), a - b = 0.1 + noise in [-0.05, 0.05].
        let b: Vec<f64> = (0..997).map(|i| f64::from(i % 7) / 7.0).collect();
        let a: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(i, x)| x + 0.1 + (f64::from(i as u32 % 11) - 5.0) / 100.0)
            .collect();
        let ci = settings(1000, 0.95, 3).mean_difference(&a, &b).unwrap();
        assert!(ci.low <= ci.mean && ci.mean <= ci.high, "{ci:?}");
        assert!(ci.low > 0.09 && ci.high < 0.11, "{ci:?}");
        assert_eq!(ci, settings(1000, 0.95, 3).mean_difference(&a, &b).unwrap());
        assert!(!ci.covers_zero());
        assert_eq!(
            ci.bracket(4, ""),
            format!("[{:+.4}, {:+.4}]", ci.low, ci.high)
        );
    }

    #[test]
    fn bootstrap_interval_of_pure_noise_covers_zero() {
        let a: Vec<f64> = (0..501).map(|i| f64::from(i % 2)).collect();
        let b: Vec<f64> = (0..501).map(|i| f64::from((i + 1) % 2)).collect();
        let ci = settings(1000, 0.95, 9).mean_difference(&a, &b).unwrap();
        assert!(ci.low < 0.0 && ci.high > 0.0, "{ci:?}");
    }

    #[test]
    fn bootstrap_rejects_bad_input() {
        let b = settings(10, 0.95, 0);
        assert!(b.mean_difference(&[1.0], &[1.0, 2.0]).is_err());
        assert!(b.mean_difference(&[], &[]).is_err());
        assert!(
            settings(0, 0.95, 0)
                .mean_difference(&[1.0], &[0.0])
                .is_err()
        );
        assert!(
            settings(10, 1.0, 0)
                .mean_difference(&[1.0], &[0.0])
                .is_err()
        );
        assert!(b.mean_differences(&[]).is_err());
        let one = [1.0];
        let side = RatioParts {
            num: &one,
            den: &[1.0, 1.0],
        };
        assert!(b.lift(side, side).is_err());
    }
}
