//! Engagement positives weighed by their advertiser's conversion rate.
//!
//! Conversions are too few to train a conversion retriever on their own, and an engagement
//! positive says nothing of whether the click was worth anything to the advertiser. Between the
//! two, each advertiser's conversions per engagement on the training rows whose conversion label
//! is known (mature rows) estimate how much its engagements are worth. Weighing every engagement
//! positive by that estimate, relative to the catalogue's rate, carries the conversion signal to
//! all the engagement rows at the advertiser's granularity (the granularity of the advertiser-level
//! loss). The estimate is shrunk towards the catalogue's rate by `prior` engagements' worth of
//! it, so an advertiser with few engagements keeps a factor near 1.

use crate::labels::CONVERTED_LABEL;

use super::example::Example;

/// Each advertiser's factor `((c_a + prior r) / (e_a + prior)) / r`: `e_a` its engagement
/// positives among mature rows, `c_a` its converted ones, `r = Σc / Σe` the catalogue's rate.
/// All 1 where no mature row has engaged or converted, or `prior` is 0 (off).
pub(crate) fn advertiser_factors(
    train: &[Example],
    pin_advertiser: &[u32],
    num_advertisers: usize,
    prior: f64,
) -> Vec<f32> {
    let mut engaged = vec![0u64; num_advertisers];
    let mut converted = vec![0u64; num_advertisers];
    for e in train.iter().filter(|e| e.label_conversion >= 0) {
        let a = pin_advertiser[e.pin as usize] as usize;
        engaged[a] += u64::from(e.label_engagement);
        converted[a] += u64::from(e.label_conversion == CONVERTED_LABEL);
    }
    let (sum_e, sum_c) = (
        engaged.iter().sum::<u64>() as f64,
        converted.iter().sum::<u64>() as f64,
    );
    if prior <= 0.0 || sum_e == 0.0 || sum_c == 0.0 {
        return vec![1.0; num_advertisers];
    }
    let rate = sum_c / sum_e;
    engaged
        .iter()
        .zip(&converted)
        .map(|(&e, &c)| (((c as f64 + prior * rate) / (e as f64 + prior)) / rate) as f32)
        .collect()
}

/// Multiplies each example's engagement weight by its advertiser's factor and recomputes its
/// row weight (`engagement_weight x weight_engagement + conversion_weight x weight_conversion`).
pub(crate) fn weigh_engagement(
    train: &mut [Example],
    pin_advertiser: &[u32],
    factors: &[f32],
    task_weights: (f32, f32),
) {
    let (engagement_weight, conversion_weight) = task_weights;
    for e in train {
        e.weight_engagement *= factors[pin_advertiser[e.pin as usize] as usize];
        e.weight =
            engagement_weight * e.weight_engagement + conversion_weight * e.weight_conversion;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::example::{HardNegatives, QueryKey};
    use crate::labels::{MASKED_LABEL, NOT_CONVERTED_LABEL};
    use crate::schema::Surface;

    fn row(pin: u32, engaged: bool, conversion: i8) -> Example {
        Example {
            key: QueryKey {
                user: 0,
                ts: 0,
                seq: i64::MIN,
                surface: Surface::HomeFeed,
                context_pin: None,
                query_id: None,
            },
            pin,
            label_engagement: engaged,
            label_conversion: conversion,
            weight_engagement: if engaged { 0.5 } else { 0.0 },
            weight_conversion: if conversion == CONVERTED_LABEL {
                2.0
            } else {
                0.0
            },
            weight: 0.0,
            hard_negatives: HardNegatives::default(),
        }
    }

    /// Pins 0 and 1 are advertiser 0's, pin 2 advertiser 1's. Mature rows: advertiser 0 has 4
    /// engagements of which 2 converted, advertiser 1 has 4 and none converted; advertiser 1's
    /// immature engagements do not count. The catalogue's rate is 2 / 8.
    fn rows() -> Vec<Example> {
        let mut rows = vec![
            row(0, true, CONVERTED_LABEL),
            row(1, true, CONVERTED_LABEL),
            row(0, true, NOT_CONVERTED_LABEL),
            row(1, true, NOT_CONVERTED_LABEL),
        ];
        rows.extend((0..4).map(|_| row(2, true, NOT_CONVERTED_LABEL)));
        rows.extend((0..5).map(|_| row(2, true, MASKED_LABEL)));
        rows
    }

    const PIN_ADVERTISER: [u32; 3] = [0, 0, 1];

    #[test]
    fn factors_are_the_shrunk_rates_over_the_catalogues() {
        let f = advertiser_factors(&rows(), &PIN_ADVERTISER, 2, 4.0);
        // ((2 + 4 x 0.25) / (4 + 4)) / 0.25 = 1.5 and ((0 + 1) / 8) / 0.25 = 0.5.
        assert_eq!(f, [1.5, 0.5]);
        let weak = advertiser_factors(&rows(), &PIN_ADVERTISER, 2, 1e6);
        assert!(weak.iter().all(|&x| (x - 1.0).abs() < 1e-4), "{weak:?}");
        assert_eq!(
            advertiser_factors(&rows(), &PIN_ADVERTISER, 2, 0.0),
            [1.0; 2]
        );
        let none_converted: Vec<Example> = rows()
            .into_iter()
            .filter(|e| e.label_conversion != CONVERTED_LABEL)
            .collect();
        assert_eq!(
            advertiser_factors(&none_converted, &PIN_ADVERTISER, 2, 4.0),
            [1.0; 2]
        );
    }

    #[test]
    fn engagement_weights_take_the_factor_and_row_weights_follow() {
        let mut rows = rows();
        weigh_engagement(&mut rows, &PIN_ADVERTISER, &[1.5, 0.5], (1.0, 3.0));
        assert_eq!(rows[0].weight_engagement, 0.75);
        assert_eq!(rows[0].weight_conversion, 2.0);
        assert_eq!(rows[0].weight, 0.75 + 3.0 * 2.0);
        assert_eq!(rows[4].weight_engagement, 0.25);
        assert_eq!(rows[4].weight, 0.25);
    }
}
