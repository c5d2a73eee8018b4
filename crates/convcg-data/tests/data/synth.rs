//! The synthetic marketplace: docs/design.md's target ranges, determinism, a ground truth that is
//! the generator's, and a policy-aware oracle that finds what users convert on.

use convcg_data::testing::spearman;
use convcg_data::{
    Dataset, DatasetConfig, EvalQueries, GroundTruth, Marketplace, QueryKey, Surface, SynthConfig,
};

fn small() -> SynthConfig {
    SynthConfig {
        num_users: 2_000,
        num_pins: 4_000,
        num_advertisers: 200,
        num_categories: 40,
        num_brands: 400,
        num_queries: 200,
        impressions: 150_000,
        ..SynthConfig::default()
    }
}

/// A fifth of the default catalog, a tenth of its users and a twelfth of its traffic: enough
/// conversions for the noise shares to be measured, quick to generate.
pub(crate) fn medium() -> SynthConfig {
    SynthConfig {
        num_users: 10_000,
        num_pins: 20_000,
        num_advertisers: 400,
        num_categories: 40,
        num_brands: 1_000,
        num_queries: 400,
        impressions: 1_500_000,
        ..SynthConfig::default()
    }
}

pub(crate) fn generate(cfg: &SynthConfig, seed: u64) -> Marketplace {
    Marketplace::generate(cfg, seed, &|_, _| {}).expect("valid config")
}

fn assert_in_design_ranges(m: &Marketplace) {
    let r = m.realised();
    let table = r.to_string();
    assert!(table.starts_with("property"), "{table}");
    assert!(
        (0.15..=0.30).contains(&r.top1_impression_share),
        "top-1% share\n{table}"
    );
    assert!(
        (0.005..=0.02).contains(&r.true_conversions_per_click),
        "true conv/click\n{table}"
    );
    assert!(
        (0.005..=0.02).contains(&r.reported_conversions_per_click),
        "reported conv/click\n{table}"
    );
    // The pooled coordinates of a hundred categories' centroids carry most of the factors'
    // structure, so the realised correlation strays a few hundredths from rho by seed.
    assert!(
        (r.factor_correlation - r.config.rho).abs() < 0.07,
        "rho\n{table}"
    );
    assert!(
        (0.6..=1.5).contains(&r.delay_median_days),
        "delay median\n{table}"
    );
    assert!(r.delay_p90_days > 5.0, "delay p90\n{table}");
    assert!(
        (0.14..=0.26).contains(&r.unreported_share),
        "unreported\n{table}"
    );
    assert!(
        (0.05..=0.10).contains(&(r.fake_share + r.misattributed_share)),
        "fake + misattributed\n{table}"
    );
    assert!(
        r.reporting_rate_sd > 0.05,
        "reporting rates vary by advertiser\n{table}"
    );
    assert!(
        r.saves < r.clicks && r.clicks < r.impressions / 10,
        "{table}"
    );
    assert!(r.ctr.iter().all(|c| (0.005..0.1).contains(c)), "{table}");
    assert!(
        r.view_through_share > 0.0 && r.view_through_share < 0.25,
        "{table}"
    );
    let imps = r.impressions as f64 / r.config.impressions as f64;
    assert!((0.95..1.05).contains(&imps), "{table}");
}

#[test]
fn realised_properties_are_in_design_ranges() {
    let m = generate(&medium(), 11);
    assert_in_design_ranges(&m);
}

/// The default config itself (the full world, the largest these tests generate).
#[test]
fn default_config_realised_properties_are_in_design_ranges() {
    let m = generate(&SynthConfig::default(), 0);
    let r = m.realised();
    assert!(
        r.num_pins >= 100_000 && r.num_advertisers >= 2_000 && r.num_users >= 50_000,
        "{r}"
    );
    assert_in_design_ranges(&m);
}

#[test]
fn same_seed_same_log_whatever_the_thread_count() {
    let cfg = small();
    let run = |threads: usize, seed: u64| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("thread pool")
            .install(|| generate(&cfg, seed))
    };
    let a = run(1, 3);
    let b = run(2, 3);
    assert_eq!(a.log, b.log);
    assert_eq!(a.true_conversions, b.true_conversions);
    let c = run(2, 4);
    assert_ne!(a.log.impressions, c.log.impressions);
    assert_ne!(a.log.pins, c.log.pins);
    assert!(!a.log.conversions.is_empty());
}

#[test]
fn the_log_is_well_formed() {
    let m = generate(&small(), 5);
    let log = &m.log;
    let ids: std::collections::HashSet<i64> =
        log.impressions.iter().map(|i| i.impression_id).collect();
    assert_eq!(ids.len(), log.impressions.len());
    let end = log
        .impressions
        .iter()
        .map(|i| i.ts)
        .max()
        .expect("impressions");
    let horizon = end + 7 * 86_400 + 86_400;
    assert!(log.conversions.iter().all(|c| c.ts <= horizon));
    assert!(m.true_conversions.iter().all(|c| c.ts <= horizon));
    for e in &log.engagements {
        assert!(ids.contains(&e.impression_id));
    }
    for i in log.impressions.iter() {
        assert_eq!(i.context_pin_id.is_some(), i.surface == Surface::Related);
        assert_eq!(i.query_id.is_some(), i.surface == Surface::Search);
    }
    assert!(
        log.pins
            .iter()
            .all(|p| p.dense.len() == log.pin_dense_names.len())
    );
    assert!(
        log.users
            .iter()
            .all(|u| u.dense.len() == log.user_dense_names.len())
    );
    assert_eq!(m.truth.num_pins(), log.pins.len());
    assert_eq!(m.truth.num_users(), log.users.len());
}

#[test]
fn ground_truth_is_what_the_generator_draws_from() {
    let m = generate(&medium(), 2);
    let t = &m.truth;
    let pin_index: std::collections::HashMap<i64, u32> = m
        .log
        .pins
        .iter()
        .enumerate()
        .map(|(i, p)| (p.pin_id, i as u32))
        .collect();
    let user_index: std::collections::HashMap<i64, u32> = m
        .log
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.user_id, i as u32))
        .collect();
    // Expected clicks and conversions under the truth match the realised counts.
    let (mut clicks, mut convs) = (0.0f64, 0.0f64);
    for i in m.log.impressions.iter() {
        let (u, p) = (user_index[&i.user_id], pin_index[&i.pin_id]);
        clicks += f64::from(t.p_click(u, p, i.surface));
        convs += f64::from(t.p_conversion(u, p, i.surface));
    }
    let r = m.realised();
    let click_ratio = r.clicks as f64 / clicks;
    assert!(
        (0.97..1.03).contains(&click_ratio),
        "clicks {} vs expected {clicks}",
        r.clicks
    );
    // Conversions past the label horizon are not logged, hence a little below the expectation.
    let conv_ratio = r.true_conversions as f64 / convs;
    assert!(
        (0.85..1.05).contains(&conv_ratio),
        "conversions {} vs expected {convs}",
        r.true_conversions
    );

    let mut scores = vec![0f32; t.num_pins()];
    for (user, surface) in [
        (0u32, Surface::HomeFeed),
        (17, Surface::Related),
        (999, Surface::Search),
    ] {
        t.conversion_scores(user, surface, &mut scores);
        for pin in (0..t.num_pins() as u32).step_by(97) {
            let p = t.p_conversion(user, pin, surface);
            assert!(
                (scores[pin as usize] - p).abs() <= 1e-6 * p.max(1e-3),
                "user {user} pin {pin}"
            );
            assert!(
                p > 0.0
                    && p < t
                        .p_click(user, pin, surface)
                        .max(t.p_view_through(user, pin))
                        + 1e-6
            );
        }
    }
}

#[test]
fn engagement_signal_differs_from_conversion_signal() {
    let m = generate(&small(), 9);
    let t = &m.truth;
    let (mut pc, mut pv) = (Vec::new(), Vec::new());
    for k in 0..20_000u32 {
        let u = (k * 7919) % t.num_users() as u32;
        let p = (k * 104_729) % t.num_pins() as u32;
        pc.push(f64::from(t.p_click(u, p, Surface::HomeFeed)));
        pv.push(f64::from(t.p_conversion_given_click(u, p)));
    }
    let rank = spearman(&pc, &pv);
    assert!(rank.abs() < 0.6, "rank correlation {rank}");

    // With only the latent factors deciding conversions (no advertiser spread, price effect,
    // inspiration pins or intent), rho sets how far clicks predict them.
    let latent = |rho: f64| {
        let cfg = SynthConfig {
            rho,
            advertiser_quality_sd: 0.0,
            price_conversion_slope: 0.0,
            inspiration_share: 0.0,
            purchase_intent_sd: 0.0,
            ..small()
        };
        generate(&cfg, 9)
            .realised()
            .click_conversion_rank_correlation
    };
    let (low, high) = (latent(0.5), latent(0.95));
    assert!(low > 0.0 && low < 0.6, "rho 0.5 gives {low}");
    assert!(high > low + 0.2, "rho 0.95 gives {high}, 0.5 gives {low}");
}

#[test]
fn config_errors_name_the_key() {
    for (cfg, key) in [
        (
            SynthConfig {
                rho: 1.5,
                ..SynthConfig::default()
            },
            "rho",
        ),
        (
            SynthConfig {
                num_advertisers: 200_000,
                ..SynthConfig::default()
            },
            "num_advertisers",
        ),
        (
            SynthConfig {
                fake_share: 0.6,
                misattributed_share: 0.5,
                ..SynthConfig::default()
            },
            "misattributed_share",
        ),
        (
            SynthConfig {
                ads_per_request: [1, 0, 1],
                ..SynthConfig::default()
            },
            "ads_per_request",
        ),
        (
            SynthConfig {
                reporting_rate_mean: 1.0,
                ..SynthConfig::default()
            },
            "reporting_rate_mean",
        ),
    ] {
        let err = cfg.validate().expect_err("invalid");
        assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        assert!(Marketplace::generate(&cfg, 0, &|_, _| {}).is_err());
    }
    assert!(SynthConfig::default().validate().is_ok());
}

#[test]
fn progress_reaches_the_total() {
    let last = std::sync::Mutex::new((0u64, 0u64));
    let cfg = SynthConfig {
        impressions: 20_000,
        ..small()
    };
    Marketplace::generate(&cfg, 1, &|done, total| {
        let mut l = last.lock().expect("not poisoned");
        l.0 = l.0.max(done);
        l.1 = total;
    })
    .expect("valid");
    let l = *last.lock().expect("not poisoned");
    assert_eq!(l, (cfg.num_users as u64, cfg.num_users as u64));
}

#[test]
fn dataset_from_the_marketplace() {
    let m = generate(&small(), 4);
    let d = Dataset::build(&m.log, Some(&m.true_conversions), &DatasetConfig::default())
        .expect("valid");
    let s = d.stats();
    assert!(s.train_engagement_examples > 1_000, "{s}");
    assert!(s.train_conversion_examples > 0, "{s}");
    assert!(
        s.unattributed > 0,
        "delays past the window and fraud leave some unattributed: {s}"
    );
    assert_eq!(
        s.attributed_click_through + s.attributed_view_through + s.unattributed,
        s.conversions
    );
    let conv = &d.eval().conversion;
    let clean = conv
        .relevant_clean
        .as_ref()
        .expect("true conversions given");
    assert_eq!(clean.len(), conv.keys.len());
    assert!(
        clean.iter().filter(|c| !c.is_empty()).count() * 2 > clean.len(),
        "{s}"
    );
    assert_eq!(d.num_pins(), m.log.pins.len());
    assert_eq!(d.num_users(), m.log.users.len());
    assert!(d.train().iter().all(|e| e.key.ts < d.eval().window_start));
}

/// Cut-off of the oracle comparison.
const K: usize = 100;

/// Mean recall@K of ranking every pin by `score` for each eval query.
fn recall(
    truth: &GroundTruth,
    queries: &EvalQueries,
    score: impl Fn(&GroundTruth, &QueryKey, &mut [f32]),
) -> f64 {
    let mut buf = vec![0f32; truth.num_pins()];
    let mut order: Vec<u32> = Vec::new();
    let mut sum = 0.0;
    for (key, relevant) in queries.keys.iter().zip(&queries.relevant) {
        score(truth, key, &mut buf);
        order.clear();
        order.extend(0..truth.num_pins() as u32);
        order.select_nth_unstable_by(K, |a, b| {
            buf[*b as usize].total_cmp(&buf[*a as usize]).then(a.cmp(b))
        });
        let hits = relevant.iter().filter(|p| order[..K].contains(p)).count();
        sum += hits as f64 / relevant.len() as f64;
    }
    sum / queries.keys.len() as f64
}

/// Ranking pins by expected outcomes per request under the incumbent's exposure policy finds the
/// pins users actually convert on and click in the eval window better than ranking by outcome
/// probability alone, which ignores what the incumbent would show.
#[test]
fn policy_aware_oracle_beats_the_context_free_one() {
    let market = generate(&medium(), 3);
    let data_cfg = DatasetConfig {
        max_eval_queries: 1_500,
        ..DatasetConfig::default()
    };
    let data =
        Dataset::build(&market.log, Some(&market.true_conversions), &data_cfg).expect("a dataset");
    let t = &market.truth;
    let eval = data.eval();
    assert!(
        eval.conversion.keys.len() >= 100,
        "{}",
        eval.conversion.keys.len()
    );
    let conv_old = recall(t, &eval.conversion, |t, k, out| {
        t.conversion_scores(k.user, k.surface, out)
    });
    let conv_new = recall(t, &eval.conversion, GroundTruth::expected_conversion_scores);
    let click_old = recall(t, &eval.engagement, |t, k, out| {
        t.click_scores(k.user, k.surface, out)
    });
    let click_new = recall(t, &eval.engagement, GroundTruth::expected_click_scores);
    println!(
        "recall@{K}: conversion {conv_old:.4} -> {conv_new:.4}, engagement {click_old:.4} -> {click_new:.4}"
    );
    assert!(conv_new > conv_old + 0.05, "{conv_new} vs {conv_old}");
    assert!(click_new > click_old + 0.05, "{click_new} vs {click_old}");
}
