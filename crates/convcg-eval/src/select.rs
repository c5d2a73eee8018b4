use std::cmp::Ordering;

/// Extra room beyond `k` in the candidate buffer, so small `k` does not compact every few items.
const MIN_SLACK: usize = 32;

/// Best-first order: higher score first, then smaller id. NaN ranks below every number so that a
/// stray NaN can never push out a real candidate; `-0.0 == 0.0` (a tie, broken by id), as in the
/// f64 reference.
pub(crate) fn best_first(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    let key = |s: f32| (!s.is_nan()).then_some(s);
    key(b.0)
        .partial_cmp(&key(a.0))
        .unwrap_or(Ordering::Equal)
        .then(a.1.cmp(&b.1))
}

/// Bounded top-k selection over a stream of `(score, id)` with strictly increasing ids.
///
/// Candidates go into a buffer of about `2k`; when it fills, a linear-time partial selection keeps
/// the best `k` and their worst score becomes the threshold. Because ids only grow, a later item
/// that merely ties the threshold loses the tie, so one `>` comparison rejects it: for a large
/// corpus almost every score is rejected by that single comparison.
pub(crate) struct Selector {
    k: usize,
    buf: Vec<(f32, u32)>,
    cap: usize,
    threshold: f32,
    /// Accept everything: fewer than `k` kept so far, or the threshold is NaN (which `>` cannot
    /// beat although every number outranks it).
    open: bool,
}

impl Selector {
    /// A selector keeping the best `k >= 1` items.
    pub(crate) fn new(k: usize) -> Self {
        debug_assert!(k >= 1);
        let cap = k + k.max(MIN_SLACK);
        Self {
            k,
            buf: Vec::with_capacity(cap),
            cap,
            threshold: f32::NEG_INFINITY,
            open: true,
        }
    }

    /// Forgets everything offered so far, keeping the allocation.
    pub(crate) fn reset(&mut self) {
        self.buf.clear();
        self.threshold = f32::NEG_INFINITY;
        self.open = true;
    }

    /// Offers `scores[j]` as item `first_id + j`; ids must exceed every id offered before.
    #[inline]
    pub(crate) fn offer(&mut self, scores: &[f32], first_id: u32) {
        let (mut open, mut threshold) = (self.open, self.threshold);
        for (j, &s) in scores.iter().enumerate() {
            if open || s > threshold {
                self.buf.push((s, first_id + j as u32));
                if self.buf.len() == self.cap {
                    self.compact();
                    (open, threshold) = (self.open, self.threshold);
                }
            }
        }
    }

    /// Offers `score` as item `id`; `id` must exceed every id offered before.
    #[inline]
    pub(crate) fn offer_one(&mut self, score: f32, id: u32) {
        if self.open || score > self.threshold {
            self.buf.push((score, id));
            if self.buf.len() == self.cap {
                self.compact();
            }
        }
    }

    /// A value `t` such that every score this selector would accept satisfies `!(s <= t)`: NaN
    /// while it accepts everything, else the current threshold. For pre-filters; the selector
    /// still decides.
    #[inline]
    pub(crate) fn filter_threshold(&self) -> f32 {
        if self.open { f32::NAN } else { self.threshold }
    }

    fn compact(&mut self) {
        if self.buf.len() > self.k {
            self.buf.select_nth_unstable_by(self.k - 1, best_first);
            self.buf.truncate(self.k);
        }
        if self.buf.len() == self.k {
            self.threshold = self.buf[self.k - 1].0;
            self.open = self.threshold.is_nan();
        }
    }

    /// Writes the best `min(k, offered)` items, best first, into the fronts of `ids` and `scores`.
    pub(crate) fn finish(&mut self, ids: &mut [u32], scores: &mut [f32]) {
        self.compact();
        self.buf.sort_unstable_by(best_first);
        for ((&(s, id), out_id), out_s) in self.buf.iter().zip(ids).zip(scores) {
            *out_id = id;
            *out_s = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_score_desc_then_id_asc_with_nan_last() {
        assert_eq!(best_first(&(2.0, 9), &(1.0, 0)), Ordering::Less);
        assert_eq!(best_first(&(1.0, 3), &(1.0, 4)), Ordering::Less);
        assert_eq!(best_first(&(-0.0, 3), &(0.0, 4)), Ordering::Less);
        assert_eq!(best_first(&(0.0, 4), &(-0.0, 3)), Ordering::Greater);
        assert_eq!(
            best_first(&(f32::NAN, 0), &(f32::NEG_INFINITY, 1)),
            Ordering::Greater
        );
        assert_eq!(best_first(&(f32::NAN, 0), &(f32::NAN, 1)), Ordering::Less);
    }

    #[test]
    fn selector_keeps_the_best_across_many_compactions() {
        let mut sel = Selector::new(3);
        // Rising scores force the threshold up on every compaction.
        let scores: Vec<f32> = (0..1000).map(|i| (i % 97) as f32).collect();
        sel.offer(&scores[..500], 0);
        sel.offer(&scores[500..], 500);
        let (mut ids, mut out) = ([0u32; 3], [0f32; 3]);
        sel.finish(&mut ids, &mut out);
        assert_eq!(out, [96.0; 3]);
        assert_eq!(ids, [96, 193, 290]);
        sel.reset();
        sel.offer(&[1.0, 5.0], 0);
        let (mut ids, mut out) = ([7u32; 3], [7f32; 3]);
        sel.finish(&mut ids, &mut out);
        assert_eq!((ids, out), ([1, 0, 7], [5.0, 1.0, 7.0]));
    }
}
