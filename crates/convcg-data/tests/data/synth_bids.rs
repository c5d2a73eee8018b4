//! Bids and conversion values of the synthetic marketplace: drawn from their own random stream,
//! so that adding them (or changing their settings) leaves every generated event as it was.

use convcg_data::{Marketplace, SynthConfig};

fn tiny() -> SynthConfig {
    SynthConfig {
        num_users: 300,
        num_pins: 1_500,
        num_advertisers: 50,
        num_categories: 20,
        num_brands: 100,
        num_queries: 40,
        impressions: 20_000,
        ..SynthConfig::default()
    }
}

fn generate(cfg: &SynthConfig, seed: u64) -> Marketplace {
    Marketplace::generate(cfg, seed, &|_, _| {}).expect("valid config")
}

/// FNV-1a over a sequence of 64-bit words.
fn fnv(words: impl IntoIterator<Item = u64>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A fingerprint of every event of the log: impressions, engagements and reported conversions.
fn log_fingerprint(m: &Marketplace) -> u64 {
    let imp = &m.log.impressions;
    let impressions = (0..imp.len()).flat_map(|i| {
        [
            imp.impression_id[i] as u64,
            imp.ts[i] as u64,
            imp.user_id[i] as u64,
            imp.pin_id[i] as u64,
            imp.surface[i].index() as u64,
        ]
    });
    let engagements = m.log.engagements.iter().flat_map(|e| {
        [
            e.impression_id as u64,
            e.ts as u64,
            u64::from(e.duration_s.map_or(0, f32::to_bits)),
        ]
    });
    let conversions = m.log.conversions.iter().flat_map(|c| {
        [
            c.ts as u64,
            c.user_id as u64,
            c.pin_id as u64,
            u64::from(c.value.map_or(0, f32::to_bits)),
        ]
    });
    fnv(impressions.chain(engagements).chain(conversions))
}

/// The log of a fixed tiny marketplace, as generated before bids existed (the fingerprint was
/// taken on the commit before them): the bid draw must not move any event.
#[test]
fn the_log_is_the_one_generated_before_bids_existed() {
    let m = generate(&tiny(), 7);
    let counts = (
        m.log.impressions.len(),
        m.log.engagements.len(),
        m.log.conversions.len(),
    );
    assert_eq!(counts, PINNED_COUNTS);
    assert_eq!(log_fingerprint(&m), PINNED_FINGERPRINT);
}

const PINNED_COUNTS: (usize, usize, usize) = (20_047, 829, 10);
const PINNED_FINGERPRINT: u64 = 11_838_732_930_357_641_703;

/// Bid settings change the bids and nothing else.
#[test]
fn bid_settings_move_no_event() {
    let base = generate(&tiny(), 7);
    let cfg = SynthConfig {
        bid_median: 2.0,
        bid_advertiser_sigma: 1.0,
        bid_pin_sigma: 0.0,
        bid_price_elasticity: -0.5,
        ..tiny()
    };
    let other = generate(&cfg, 7);
    assert_eq!(log_fingerprint(&base), log_fingerprint(&other));
    assert_eq!(base.true_conversions, other.true_conversions);
    let pins = base.truth.num_pins() as u32;
    assert!((0..pins).any(|p| base.truth.bid(p) != other.truth.bid(p)));
    for p in 0..pins {
        assert_eq!(
            base.truth.p_click(0, p, convcg_data::Surface::Search),
            other.truth.p_click(0, p, convcg_data::Surface::Search)
        );
        assert_eq!(
            base.truth.conversion_value(p),
            other.truth.conversion_value(p)
        );
    }
}

/// Bids are cents, around the median, spread by advertiser, higher for dearer pins, and the
/// same on every generation of the seed.
#[test]
fn bids_are_realistic_and_deterministic() {
    let cfg = SynthConfig {
        num_advertisers: 300,
        ..tiny()
    };
    let m = generate(&cfg, 11);
    let again = generate(&cfg, 11);
    let n = m.truth.num_pins() as u32;
    let bids: Vec<f32> = (0..n).map(|p| m.truth.bid(p)).collect();
    assert_eq!(bids, (0..n).map(|p| again.truth.bid(p)).collect::<Vec<_>>());
    assert!(bids.iter().all(|&b| b >= 0.01 && b.is_finite()));
    for &b in &bids {
        let cents = f64::from(b) * 100.0;
        assert!(
            (cents - cents.round()).abs() < 1e-3,
            "{b} is not a whole number of cents"
        );
    }
    let mut sorted = bids.clone();
    sorted.sort_by(f32::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!((0.4..=1.4).contains(&median), "median bid {median}");
    let (p10, p90) = (sorted[sorted.len() / 10], sorted[sorted.len() * 9 / 10]);
    assert!(p90 / p10 > 2.0, "bids too alike: p10 {p10}, p90 {p90}");
    // Dearer pins bid more.
    let priced: Vec<(f64, f64)> = m
        .log
        .pins
        .iter()
        .zip(&bids)
        .filter_map(|(pin, &b)| pin.price.map(|p| (f64::from(p), f64::from(b))))
        .collect();
    let prices: Vec<f64> = priced.iter().map(|x| x.0).collect();
    let priced_bids: Vec<f64> = priced.iter().map(|x| x.1).collect();
    let rho = convcg_data::spearman(&prices, &priced_bids);
    assert!(rho > 0.2, "spearman(price, bid) = {rho}");
}

#[test]
fn without_spread_every_bid_is_the_median() {
    let cfg = SynthConfig {
        bid_median: 0.8,
        bid_advertiser_sigma: 0.0,
        bid_pin_sigma: 0.0,
        bid_price_elasticity: 0.0,
        ..tiny()
    };
    let m = generate(&cfg, 3);
    assert!((0..m.truth.num_pins() as u32).all(|p| m.truth.bid(p) == 0.8));
}

/// A conversion's expected value is the pin's price times the generator's mean value per unit
/// of price: (purchase 0.5 + checkout 0.12) x exp(0.3^2 / 2) + add to cart 0.22.
#[test]
fn conversion_values_follow_the_price() {
    let m = generate(&tiny(), 5);
    let per_price = 0.62 * (0.045f64).exp() + 0.22;
    let mut without = 0;
    for (p, pin) in m.log.pins.iter().enumerate() {
        let v = f64::from(m.truth.conversion_value(p as u32));
        match pin.price {
            Some(price) => assert!((v - f64::from(price) * per_price).abs() <= 1e-5 * v, "{v}"),
            None => {
                assert_eq!(v, 0.0);
                without += 1;
            }
        }
    }
    assert!(without > 0 && without < m.log.pins.len() / 5);
}

#[test]
fn bad_bid_settings_name_their_key() {
    for (cfg, key) in [
        (
            SynthConfig {
                bid_median: 0.0,
                ..tiny()
            },
            "bid_median",
        ),
        (
            SynthConfig {
                bid_pin_sigma: -1.0,
                ..tiny()
            },
            "bid_pin_sigma",
        ),
        (
            SynthConfig {
                bid_advertiser_sigma: f64::NAN,
                ..tiny()
            },
            "bid_advertiser_sigma",
        ),
        (
            SynthConfig {
                bid_price_elasticity: f64::INFINITY,
                ..tiny()
            },
            "bid_price_elasticity",
        ),
    ] {
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }
}
