//! The marketplace's mechanisms that make conversions differ from clicks (docs/design.md, "The
//! synthetic marketplace"): each one moves what it should, on a world small enough to generate
//! quickly.

use std::collections::HashMap;
use std::sync::OnceLock;

use convcg_data::{Marketplace, Surface, SynthConfig};

use crate::synth::{generate, medium};

/// `synth`'s medium world with half its categories.
fn world() -> SynthConfig {
    SynthConfig {
        num_categories: 20,
        ..medium()
    }
}

/// The default-settings world, generated once for the tests that only read it.
fn shared() -> &'static Marketplace {
    static WORLD: OnceLock<Marketplace> = OnceLock::new();
    WORLD.get_or_init(|| generate(&world(), 3))
}

/// Each impression's (user, pin, surface) as indices into the log's tables.
fn impressions(m: &Marketplace) -> Vec<(u32, u32, Surface)> {
    let users: HashMap<i64, u32> = (0..m.log.users.len())
        .map(|i| (m.log.users[i].user_id, i as u32))
        .collect();
    let pins: HashMap<i64, u32> = (0..m.log.pins.len())
        .map(|i| (m.log.pins[i].pin_id, i as u32))
        .collect();
    let imp = &m.log.impressions;
    (0..imp.len())
        .map(|i| (users[&imp.user_id[i]], pins[&imp.pin_id[i]], imp.surface[i]))
        .collect()
}

#[test]
fn inspiration_pins_are_clicked_more_and_bought_less_than_their_categorys_other_pins() {
    let r = shared().realised();
    assert!((0.17..=0.23).contains(&r.inspiration_share), "{r}");
    assert!(r.inspiration_ctr_ratio > 1.3, "{r}");
    assert!(r.inspiration_conversion_ratio < 0.4, "{r}");
}

#[test]
fn advertisers_convert_very_unequally() {
    let r = shared().realised();
    let [p10, _, p90] = r.advertiser_conversion_rate;
    assert!(p10 > 0.0 && p90 >= 10.0 * p10, "{r}");
}

#[test]
fn price_lowers_conversions_and_hardly_moves_clicks() {
    let r = shared().realised();
    let (conversion, click) = r.price_rank_correlation;
    assert!(conversion < -0.15, "{r}");
    assert!(click.abs() < 0.05, "{r}");
}

#[test]
fn a_minority_of_users_makes_much_of_the_conversions() {
    let r = shared().realised();
    assert!(r.top_intent_conversion_share > 0.3, "{r}");
    assert!(
        r.top_intent_conversion_share > 2.5 * r.top_intent_click_share,
        "{r}"
    );
}

/// Conversion-objective auctions show ads that convert: with every advertiser on a conversion
/// campaign, the impressions' mean true conversion probability is higher than with none.
#[test]
fn conversion_campaigns_show_ads_that_convert() {
    let mean_p_conversion = |share: f64| {
        let m = generate(
            &SynthConfig {
                conversion_campaign_share: share,
                ..world()
            },
            3,
        );
        let imps = impressions(&m);
        let sum: f64 = imps
            .iter()
            .map(|&(u, p, s)| f64::from(m.truth.p_conversion(u, p, s)))
            .sum();
        sum / imps.len() as f64
    };
    let (clicks, conversions) = (mean_p_conversion(0.0), mean_p_conversion(1.0));
    assert!(
        conversions > 1.2 * clicks,
        "mean p_conversion of shown ads: {conversions} (conversion campaigns) vs {clicks} (click campaigns)"
    );
    let r = shared().realised();
    assert!((0.5..=0.7).contains(&r.conversion_campaign_share), "{r}");
}

/// An advertiser whose budget binds takes part in fewer auctions, so its pins are shown less.
#[test]
fn budget_limited_advertisers_are_shown_less() {
    let m = shared();
    let mut shown = [0f64; 2];
    for (_, p, _) in impressions(m) {
        shown[usize::from(m.truth.participation(p) < 1.0)] += 1.0;
    }
    let mut pins = [0f64; 2];
    for p in 0..m.truth.num_pins() as u32 {
        pins[usize::from(m.truth.participation(p) < 1.0)] += 1.0;
    }
    let (free, limited) = (shown[0] / pins[0], shown[1] / pins[1]);
    assert!(
        limited < 0.85 * free,
        "impressions per pin: {limited} limited vs {free}"
    );
}

/// Traffic requests: deterministic, in the time range, each surface with its context.
#[test]
fn traffic_follows_the_marketplace() {
    let m = shared();
    let (from, to) = (m.log.impressions.ts[0], m.log.impressions.ts[0] + 86_400);
    let keys = m.traffic(5_000, from, to, 9).expect("valid range");
    assert_eq!(keys, m.traffic(5_000, from, to, 9).expect("valid range"));
    assert_ne!(keys, m.traffic(5_000, from, to, 10).expect("valid range"));
    assert!(keys.windows(2).all(|w| w[0].ts <= w[1].ts));
    let mut per_surface = [0usize; 3];
    for k in &keys {
        assert!((from..to).contains(&k.ts));
        per_surface[k.surface.index()] += 1;
        match k.surface {
            Surface::HomeFeed => assert!(k.context_pin.is_none() && k.query_id.is_none()),
            Surface::Related => assert!(k.context_pin.is_some()),
            Surface::Search => assert!(k.query_id.is_some()),
        }
    }
    let traffic = world().surface_traffic;
    let total: f64 = traffic.iter().sum();
    for (s, &n) in per_surface.iter().enumerate() {
        let share = n as f64 / keys.len() as f64;
        assert!(
            (share - traffic[s] / total).abs() < 0.03,
            "surface {s}: {share}"
        );
    }
    assert!(m.traffic(10, to, from, 9).is_err());
}
