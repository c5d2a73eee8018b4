//! The advertisers' side of the auctions (docs/design.md, "The synthetic marketplace" and
//! "Simulated serving"): cost-per-click bids, campaign objectives with their target cost per
//! action, budget pacing, and the expected value of a conversion.
//!
//! Drawn after the world, from a random stream of their own (the seed's stream
//! [`BID_STREAM`]), so that changing their settings moves no draw of the world or of the users'
//! streams; they do change which ads the incumbent's auction shows.

use rand::{Rng, SeedableRng};
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

/// What the advertisers bring to the auctions.
pub(crate) struct Campaigns {
    /// Every pin's cost-per-click bid.
    pub(crate) pin_bid: Vec<f32>,
    /// Per advertiser, its target cost per action if it runs a conversion campaign.
    pub(crate) target_cpa: Vec<Option<f32>>,
    /// Per advertiser, the share of auctions it takes part in (1 unless its budget binds).
    pub(crate) participation: Vec<f32>,
}

/// Random users per pin behind the scale of the target CPAs.
const RATE_USERS_PER_PIN: usize = 4;

/// The bids ([`draw_bids`]), then per advertiser in advertiser order, from the same stream: its
/// objective (a conversion campaign with probability `conversion_campaign_share`), the lognormal
/// factor of its target CPA and its budget pacing.
///
/// An advertiser's target CPA follows what a conversion is worth to it: `kappa x` its pins' mean
/// expected conversion value (`values`, [`conversion_values`] of `pins`; the catalog's mean where
/// it has no price)
/// `x exp(target_cpa_sigma Z)`. `kappa` puts the auctions' two currencies on one scale: over
/// [`RATE_USERS_PER_PIN`] random users of every pin, with `(p_click, p_conv|genuine click) =
/// outcome(rng, pin)`, it makes the mean auction value of a conversion campaign,
/// `kappa x value x p_click x genuine_click_share x p_conv`, equal that of a click campaign,
/// `bid x p_click`. So conversion campaigns compete with click campaigns on an even footing
/// overall (as clicks, not random pairs, convert: the means are weighted by the click
/// probability), and among them an advertiser whose clicks convert better wins more auctions, as
/// in target-CPA auctions. A budget-limited
/// advertiser (probability `budget_limited_share`) takes part in a uniform share in
/// `[budget_pacing_min, 1]` of auctions.
pub(crate) fn draw_campaigns(
    cfg: &SynthConfig,
    seed: u64,
    pins: &[PinRecord],
    pin_advertiser: &[u32],
    values: &[f32],
    outcome: impl Fn(&mut ChaCha8Rng, u32) -> (f64, f64),
) -> Campaigns {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(BID_STREAM);
    let pin_bid = draw_bids(cfg, &mut rng, pins, pin_advertiser);
    let na = cfg.num_advertisers;
    let mut value_sum = vec![0f64; na];
    let mut priced = vec![0f64; na];
    let mut count = vec![0f64; na];
    // Per pin, the mean over random users of p_click and of p_click x p_conv.
    let mut clicks = vec![(0f64, 0f64); pins.len()];
    for (p, (&a, c)) in pin_advertiser.iter().zip(clicks.iter_mut()).enumerate() {
        let a = a as usize;
        if pins[p].price.is_some() {
            value_sum[a] += f64::from(values[p]);
            priced[a] += 1.0;
        }
        for _ in 0..RATE_USERS_PER_PIN {
            let (pc, g) = outcome(&mut rng, p as u32);
            c.0 += pc / RATE_USERS_PER_PIN as f64;
            c.1 += pc * g / RATE_USERS_PER_PIN as f64;
        }
        count[a] += 1.0;
    }
    let genuine = 1.0 - cfg.accidental_click_share;
    let catalog_value = value_sum.iter().sum::<f64>() / priced.iter().sum::<f64>().max(1.0);
    let value: Vec<f64> = (0..na)
        .map(|a| {
            if priced[a] > 0.0 {
                value_sum[a] / priced[a]
            } else {
                catalog_value
            }
        })
        .collect();
    let (mut click_value, mut conversion_value) = (0f64, 0f64);
    for ((&a, &bid), &(pc, pcg)) in pin_advertiser.iter().zip(&pin_bid).zip(&clicks) {
        click_value += f64::from(bid) * pc;
        conversion_value += value[a as usize] * genuine * pcg;
    }
    let kappa = if conversion_value > 0.0 {
        click_value / conversion_value
    } else {
        0.0
    };
    let mut target_cpa = Vec::with_capacity(na);
    let mut participation = Vec::with_capacity(na);
    for a in 0..na {
        let conversion = rng.random_bool(cfg.conversion_campaign_share);
        let z: f64 = StandardNormal.sample(&mut rng);
        let limited = rng.random_bool(cfg.budget_limited_share);
        let pacing = rng.random_range(0.0..1.0f64);
        target_cpa.push((conversion && count[a] > 0.0 && kappa > 0.0).then(|| {
            let t = kappa * value[a] * (cfg.target_cpa_sigma * z).exp();
            ((t * 100.0).round() / 100.0).max(MIN_BID) as f32
        }));
        participation.push(if limited {
            (cfg.budget_pacing_min + (1.0 - cfg.budget_pacing_min) * pacing) as f32
        } else {
            1.0
        });
    }
    Campaigns {
        pin_bid,
        target_cpa,
        participation,
    }
}

/// Every pin's cost-per-click bid, in the currency of the prices:
///
/// `bid = bid_median * exp(bid_advertiser_sigma * z_a + bid_pin_sigma * z_p
///        + bid_price_elasticity * (ln price - 3.5))`,
///
/// with `z_a ~ N(0, 1)` per advertiser (an advertiser bids high or low across its catalog),
/// `z_p ~ N(0, 1)` per pin, and the price term 0 for a pin without a price. Rounded to the cent,
/// at least a cent. The advertiser draws come first (in advertiser order), then the pins' (in pin
/// order), from `rng`.
fn draw_bids(
    cfg: &SynthConfig,
    rng: &mut ChaCha8Rng,
    pins: &[PinRecord],
    pin_advertiser: &[u32],
) -> Vec<f32> {
    let advertiser: Vec<f64> = (0..cfg.num_advertisers)
        .map(|_| StandardNormal.sample(rng))
        .collect();
    let ln_median = cfg.bid_median.ln();
    pins.iter()
        .zip(pin_advertiser)
        .map(|(pin, &a)| {
            let z_pin: f64 = StandardNormal.sample(rng);
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
