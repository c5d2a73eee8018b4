//! Bids and conversion values of the synthetic marketplace: drawn from their own random stream,
//! so that changing their settings moves no draw of the world (they do move which ads the
//! auctions show).

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

/// Bid settings change the bids, hence which ads the auctions show, but no draw of the world:
/// catalog, users, their click and conversion probabilities and the conversion values are the
/// same, because the bids come from a random stream of their own.
#[test]
fn bid_settings_move_no_draw_of_the_world() {
    let base = generate(&tiny(), 7);
    let cfg = SynthConfig {
        bid_median: 2.0,
        bid_advertiser_sigma: 1.0,
        bid_pin_sigma: 0.0,
        bid_price_elasticity: -0.5,
        ..tiny()
    };
    let other = generate(&cfg, 7);
    assert_eq!(base.log.pins, other.log.pins);
    assert_eq!(base.log.users, other.log.users);
    let pins = base.truth.num_pins() as u32;
    assert!((0..pins).any(|p| base.truth.bid(p) != other.truth.bid(p)));
    for p in 0..pins {
        for u in [0, 1, 2] {
            assert_eq!(
                base.truth.p_click(u, p, convcg_data::Surface::Search),
                other.truth.p_click(u, p, convcg_data::Surface::Search)
            );
            assert_eq!(
                base.truth.p_conversion_given_click(u, p),
                other.truth.p_conversion_given_click(u, p)
            );
        }
        assert_eq!(
            base.truth.conversion_value(p),
            other.truth.conversion_value(p)
        );
        assert_eq!(
            base.truth.target_cpa(p).is_some(),
            other.truth.target_cpa(p).is_some()
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
    let rho = convcg_data::testing::spearman(&prices, &priced_bids);
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
