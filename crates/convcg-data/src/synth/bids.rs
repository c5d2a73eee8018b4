//! Advertisers' cost-per-click bids and the expected value of a conversion, for the simulated
//! serving's auction (design.md, "Simulated serving").
//!
//! Drawn after the world, from a random stream of their own (the seed's stream
//! [`BID_STREAM`]), so that adding them, or changing their settings, moves no generated event.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::schema::PinRecord;
use crate::synth::SynthConfig;
use crate::synth::serve::KIND_SHARES;

/// The ChaCha8 stream of the seed the bids are drawn from: apart from the world's (0), the
/// users' (1 ..= users), the realised-properties sample's (`u64::MAX - 1`) and fraud's
/// (`u64::MAX`).
pub(crate) const BID_STREAM: u64 = u64::MAX - 2;

/// The catalog's median log price: the mean of the categories' typical log prices
/// (`world::World::build` draws them from N(3.5, 0.8^2)), so that a pin at it bids the median.
const MEDIAN_LOG_PRICE: f64 = 3.5;

/// Smallest bid: one cent.
const MIN_BID: f64 = 0.01;

/// Every pin's cost-per-click bid, in the currency of the prices:
///
/// `bid = bid_median * exp(bid_advertiser_sigma * z_a + bid_pin_sigma * z_p
///        + bid_price_elasticity * (ln price - 3.5))`,
///
/// with `z_a ~ N(0, 1)` per advertiser (an advertiser bids high or low across its catalog),
/// `z_p ~ N(0, 1)` per pin, and the price term 0 for a pin without a price. Rounded to the cent,
/// at least a cent. The advertiser draws come first (in advertiser order), then the pins' (in pin
/// order), all from [`BID_STREAM`].
pub(crate) fn draw_bids(
    cfg: &SynthConfig,
    seed: u64,
    pins: &[PinRecord],
    pin_advertiser: &[u32],
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(BID_STREAM);
    let advertiser: Vec<f64> = (0..cfg.num_advertisers)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let ln_median = cfg.bid_median.ln();
    pins.iter()
        .zip(pin_advertiser)
        .map(|(pin, &a)| {
            let z_pin: f64 = StandardNormal.sample(&mut rng);
            let price = pin.price.map_or(0.0, |p| {
                cfg.bid_price_elasticity * (f64::from(p).ln() - MEDIAN_LOG_PRICE)
            });
            let log_bid = ln_median
                + cfg.bid_advertiser_sigma * advertiser.get(a as usize).copied().unwrap_or(0.0)
                + cfg.bid_pin_sigma * z_pin
                + price;
            ((log_bid.exp() * 100.0).round() / 100.0).max(MIN_BID) as f32
        })
        .collect()
}

/// The expected value a conversion of a pin reports, per unit of its price: purchases and
/// checkouts report the price times a lognormal basket factor `exp(0.3 Z)` (mean `exp(0.045)`),
/// adds to cart the price, sign-ups and leads nothing (`serve::Serving::conversion_event`).
pub(crate) fn value_per_price() -> f64 {
    let basket = (0.5f64 * 0.3 * 0.3).exp();
    (KIND_SHARES[0] + KIND_SHARES[1]) * basket + KIND_SHARES[2]
}

/// Every pin's expected conversion value: its price times [`value_per_price`], 0 without a price.
pub(crate) fn conversion_values(pins: &[PinRecord]) -> Vec<f32> {
    let per_price = value_per_price();
    pins.iter()
        .map(|p| {
            p.price
                .map_or(0.0, |price| (f64::from(price) * per_price) as f32)
        })
        .collect()
}
