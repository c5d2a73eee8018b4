//! Identity codes: a fixed pseudo-random sign vector per catalogue pin, derived from the pin's
//! id alone, so that every pin has one whether or not training ever saw it. A query carries the
//! mean code of the user's recent pins; the inner product of that mean with a pin's code is
//! large for the pins in the bag and near zero for the rest, which lets a two-tower model
//! retrieve what the user just engaged with, cold pins included, where the id tables (whose
//! unseen ids share the out-of-vocabulary row) cannot.

use ndarray::{Array2, ArrayView2};

/// `dense` with each row `p` followed by the code of the `p`-th of `pin_ids`, `dim` columns:
/// entries `±1/sqrt(dim)` (a unit vector) drawn from the id by a fixed hash.
pub(crate) fn append_codes(
    dense: &Array2<f32>,
    pin_ids: impl ExactSizeIterator<Item = i64>,
    dim: usize,
) -> Array2<f32> {
    let (rows, own) = dense.dim();
    assert_eq!(rows, pin_ids.len(), "a code per row");
    let value = 1.0 / (dim.max(1) as f32).sqrt();
    let mut out = Array2::zeros((rows, own + dim));
    for ((mut row, from), pin_id) in out.rows_mut().into_iter().zip(dense.rows()).zip(pin_ids) {
        let Some(row) = row.as_slice_mut() else {
            unreachable!("a fresh array's rows are contiguous")
        };
        let (head, code) = row.split_at_mut(own);
        head.iter_mut().zip(from).for_each(|(h, &f)| *h = f);
        let mut state = pin_id as u64;
        for chunk in code.chunks_mut(64) {
            let bits = mix(&mut state);
            for (j, x) in chunk.iter_mut().enumerate() {
                *x = if bits >> j & 1 == 1 { value } else { -value };
            }
        }
    }
    out
}

/// Writes the mean of `codes`' rows `pins` into `out` (zeros for no pins).
pub(crate) fn mean_code(codes: ArrayView2<'_, f32>, pins: &[u32], out: &mut [f32]) {
    out.fill(0.0);
    if pins.is_empty() {
        return;
    }
    for &p in pins {
        for (o, &c) in out.iter_mut().zip(codes.row(p as usize)) {
            *o += c;
        }
    }
    let inv = 1.0 / pins.len() as f32;
    out.iter_mut().for_each(|o| *o *= inv);
}

/// SplitMix64's step: advances `state` and returns the next 64 well-mixed bits.
fn mix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The codes of `ids` alone (no other columns).
    fn id_codes(ids: &[i64], dim: usize) -> Array2<f32> {
        append_codes(&Array2::zeros((ids.len(), 0)), ids.iter().copied(), dim)
    }

    #[test]
    fn codes_are_unit_vectors_fixed_by_the_pin_id() {
        let a = id_codes(&[7, 8, 9], 80);
        let b = id_codes(&[9, 7], 80);
        for row in a.rows() {
            let norm: f32 = row.iter().map(|x| x * x).sum();
            assert!((norm - 1.0).abs() < 1e-5, "norm² {norm}");
        }
        assert_eq!(
            a.row(0),
            b.row(1),
            "pin 7's code depends on its id, not its position"
        );
        assert_eq!(a.row(2), b.row(0));
        assert_ne!(a.row(0), a.row(1));
    }

    #[test]
    fn a_bag_mean_picks_out_its_members() {
        let ids: Vec<i64> = (1000..3000).collect();
        let codes = id_codes(&ids, 64);
        let bag = [3u32, 500, 1999];
        let mut mean = vec![0.0; 64];
        mean_code(codes.view(), &bag, &mut mean);
        let score = |p: usize| -> f32 { codes.row(p).iter().zip(&mean).map(|(a, b)| a * b).sum() };
        let lowest_member = bag
            .iter()
            .map(|&p| score(p as usize))
            .fold(f32::MAX, f32::min);
        let above = (0..ids.len())
            .filter(|p| !bag.contains(&(*p as u32)) && score(*p) >= lowest_member)
            .count();
        assert!(
            (lowest_member - 1.0 / 3.0).abs() < 0.15,
            "member score {lowest_member}"
        );
        assert!(
            above < 10,
            "{above} of 2000 other pins score as high as a bag member"
        );
        mean_code(codes.view(), &[], &mut mean);
        assert!(mean.iter().all(|&x| x == 0.0));
    }
}
