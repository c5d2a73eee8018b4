//! Hard negatives: unengaged, unconverted impressions of the positive's request, else of the
//! same user and UTC day, chosen by a seeded hash.

use rayon::prelude::*;

use crate::hash::IdMap;
use crate::schema::Impressions;

use super::prefilter::Prefilter;
use super::{MAX_HARD_NEGATIVES, NONE};

const DAY_S: i64 = 86_400;

/// splitmix64's finaliser (Steele, Lea and Flood, 2014): a bijection on u64 whose output bits
/// each depend on every input bit.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `count` corpus negatives for step `step`: pins drawn uniformly with replacement from
/// `0..n_pins` (mixed negative sampling, Yang et al., WWW 2020). Draw `i` is
/// `mix(mix(mix(seed) ^ step) + i)` scaled onto `0..n_pins` by a widening multiply, so a step's
/// draws depend only on the seed and the step: a resumed run draws exactly what an uninterrupted
/// one would, with no generator state to save. Each draw has log probability
/// [`uniform_log_q`]`(n_pins)`. Empty when `n_pins` is 0.
pub fn uniform_negatives(n_pins: usize, count: usize, seed: u64, step: u64) -> Vec<u32> {
    if n_pins == 0 {
        return Vec::new();
    }
    let state = mix(mix(seed) ^ step);
    (0..count as u64)
        .map(|i| ((u128::from(mix(state.wrapping_add(i))) * n_pins as u128) >> 64) as u32)
        .collect()
}

/// The log probability of one uniform draw from `n_pins` pins, `-ln(n_pins)`: the logQ
/// correction of a [`uniform_negatives`] candidate.
pub fn uniform_log_q(n_pins: usize) -> f32 {
    -(n_pins as f64).ln() as f32
}

/// The seeded hash that orders a positive's candidates: splitmix64 applied in a chain,
/// `mix(mix(mix(seed) ^ positive_id) ^ candidate_id)`, over impression ids (not row indices, so
/// the draw does not depend on the log's row order). Taking the candidates with the least hash
/// is a uniform draw without replacement, independent between positives.
pub(crate) fn pick_hash(seed: u64, positive_id: i64, candidate_id: i64) -> u64 {
    candidate_hash(positive_state(seed, positive_id), candidate_id)
}

/// The part of [`pick_hash`] that depends on the positive alone, computed once per positive.
fn positive_state(seed: u64, positive_id: i64) -> u64 {
    mix(mix(seed) ^ positive_id as u64)
}

fn candidate_hash(state: u64, candidate_id: i64) -> u64 {
    mix(state ^ candidate_id as u64)
}

/// The `h` candidates of least (hash, index) seen so far, in that order.
struct Smallest {
    h: usize,
    len: usize,
    items: [(u64, u32); MAX_HARD_NEGATIVES],
}

impl Smallest {
    fn new(h: usize) -> Smallest {
        Smallest {
            h,
            len: 0,
            items: [(u64::MAX, NONE); MAX_HARD_NEGATIVES],
        }
    }

    fn offer(&mut self, key: (u64, u32)) {
        if self.len == self.h && key >= self.items[self.len - 1] {
            return;
        }
        let mut k = self.len.min(self.h - 1);
        if self.len < self.h {
            self.len += 1;
        }
        while k > 0 && self.items[k - 1] > key {
            self.items[k] = self.items[k - 1];
            k -= 1;
        }
        self.items[k] = key;
    }

    /// Writes the chosen impressions into `out` (`h` long), [`NONE`] past the last; returns
    /// how many were chosen.
    fn write(&self, out: &mut [u32]) -> usize {
        for (k, o) in out.iter_mut().enumerate() {
            *o = if k < self.len { self.items[k].1 } else { NONE };
        }
        self.len
    }
}

/// What the draw needs to know about each impression.
pub(crate) struct Pool<'a> {
    pub(crate) imps: &'a Impressions,
    /// Whether impression `i` may be a hard negative: in scope, no engagement, no attributed
    /// conversion.
    pub(crate) is_candidate: &'a (dyn Fn(usize) -> bool + Sync),
    pub(crate) per_positive: usize,
    pub(crate) seed: u64,
}

/// Hard negatives drawn, and where from.
pub(crate) struct Drawn {
    /// `positives.len() * per_positive` impression indices, [`NONE`] where there was none.
    pub(crate) impressions: Vec<u32>,
    pub(crate) from_request: usize,
    pub(crate) from_same_day: usize,
}

/// Groups the candidates of each request, for [`Pool::draw`].
enum RequestIndex {
    /// `request_id` is non-decreasing over the rows, so each request is one run of rows.
    Runs,
    /// Candidates as (request id, impression index), sorted.
    Sorted(Vec<(i64, u32)>),
}

impl Pool<'_> {
    /// Draws `per_positive` hard negatives for each positive (impression indices): the
    /// candidates of least [`pick_hash`] among the same request's, or, where the request has
    /// none, among the same user's of the same UTC day (`ts.div_euclid(86_400)`).
    pub(crate) fn draw(&self, positives: &[u32]) -> Drawn {
        let h = self.per_positive;
        let mut impressions = vec![NONE; positives.len() * h];
        if h == 0 {
            return Drawn {
                impressions,
                from_request: 0,
                from_same_day: 0,
            };
        }
        let index = self.request_index();
        let from_request: usize = impressions
            .par_chunks_mut(h)
            .zip(positives)
            .with_min_len(1 << 10)
            .map(|(out, &p)| {
                let mut best = Smallest::new(h);
                let state = self.state(p);
                self.for_each_request_candidate(&index, p as usize, |c| {
                    best.offer((self.hash(state, c), c));
                });
                best.write(out)
            })
            .sum();
        drop(index);

        let need: Vec<usize> = (0..positives.len())
            .filter(|&k| impressions[k * h] == NONE)
            .collect();
        let from_same_day = if need.is_empty() {
            0
        } else {
            self.draw_same_day(positives, &need, &mut impressions)
        };
        Drawn {
            impressions,
            from_request,
            from_same_day,
        }
    }

    fn state(&self, positive: u32) -> u64 {
        positive_state(self.seed, self.imps.impression_id[positive as usize])
    }

    fn hash(&self, state: u64, candidate: u32) -> u64 {
        candidate_hash(state, self.imps.impression_id[candidate as usize])
    }

    fn request_index(&self) -> RequestIndex {
        let req = &self.imps.request_id;
        if req.par_windows(2).all(|w| w[0] <= w[1]) {
            return RequestIndex::Runs;
        }
        let mut cands: Vec<(i64, u32)> = (0..req.len())
            .into_par_iter()
            .with_min_len(1 << 14)
            .filter(|&i| (self.is_candidate)(i))
            .map(|i| (req[i], i as u32))
            .collect();
        cands.par_sort_unstable();
        RequestIndex::Sorted(cands)
    }

    fn for_each_request_candidate(&self, index: &RequestIndex, p: usize, mut f: impl FnMut(u32)) {
        let req = &self.imps.request_id;
        let r = req[p];
        match index {
            RequestIndex::Runs => {
                let mut lo = p;
                while lo > 0 && req[lo - 1] == r {
                    lo -= 1;
                }
                let mut hi = p + 1;
                while hi < req.len() && req[hi] == r {
                    hi += 1;
                }
                for c in lo..hi {
                    if (self.is_candidate)(c) {
                        f(c as u32);
                    }
                }
            }
            RequestIndex::Sorted(cands) => {
                let a = cands.partition_point(|&(q, _)| q < r);
                for &(_, c) in cands[a..].iter().take_while(|&&(q, _)| q == r) {
                    f(c);
                }
            }
        }
    }

    /// The fallback for the positives `need` (indices into `positives`) whose request had no
    /// candidate: one pass over the log collects the candidates of their (user, day) keys.
    fn draw_same_day(&self, positives: &[u32], need: &[usize], out: &mut [u32]) -> usize {
        let h = self.per_positive;
        let imps = self.imps;
        let key = |i: usize| (imps.user_id[i], imps.ts[i].div_euclid(DAY_S));
        let mut slot_of: IdMap<(i64, i64), u32> = IdMap::default();
        let mut filter = Prefilter::with_capacity(need.len());
        for &k in need {
            let next = slot_of.len() as u32;
            let key = key(positives[k] as usize);
            filter.insert(key);
            slot_of.entry(key).or_insert(next);
        }
        let mut found: Vec<(u32, u32)> = (0..imps.len())
            .into_par_iter()
            .with_min_len(1 << 14)
            .filter_map(|i| {
                let key = key(i);
                if !filter.may_contain(key) {
                    return None;
                }
                let slot = *slot_of.get(&key)?;
                (self.is_candidate)(i).then_some((slot, i as u32))
            })
            .collect();
        found.par_sort_unstable();
        let mut drawn = 0;
        for &k in need {
            let p = positives[k];
            let Some(&slot) = slot_of.get(&key(p as usize)) else {
                continue;
            };
            let a = found.partition_point(|&(s, _)| s < slot);
            let mut best = Smallest::new(h);
            let state = self.state(p);
            for &(_, c) in found[a..].iter().take_while(|&&(s, _)| s == slot) {
                best.offer((self.hash(state, c), c));
            }
            drawn += best.write(&mut out[k * h..(k + 1) * h]);
        }
        drawn
    }
}

#[cfg(test)]
mod uniform_tests {
    use super::{uniform_log_q, uniform_negatives};

    #[test]
    fn uniform_negatives_are_in_range_repeatable_and_roughly_uniform() {
        let n = 7;
        let draws = uniform_negatives(n, 70_000, 3, 11);
        assert_eq!(draws, uniform_negatives(n, 70_000, 3, 11));
        assert_ne!(draws, uniform_negatives(n, 70_000, 3, 12));
        assert_ne!(draws, uniform_negatives(n, 70_000, 4, 11));
        let mut counts = [0usize; 7];
        for &p in &draws {
            counts[p as usize] += 1;
        }
        // Each of 7 pins expects 10,000 draws; 5 standard deviations is about 460.
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
        assert!(uniform_negatives(0, 5, 1, 1).is_empty());
        assert!((uniform_log_q(n) - -(7f32).ln()).abs() < 1e-6);
    }
}
