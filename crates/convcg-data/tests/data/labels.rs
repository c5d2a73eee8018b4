//! The training-data rules on hand-made logs: the W3 peer's self-test (31 events, the same
//! expected outcomes as `shared/peers/w3_duckdb_pipeline.py --self-test`), then one small case
//! per rule.

use std::collections::{BTreeMap, BTreeSet};

use convcg_data::testing::NONE;
use convcg_data::{
    ClickWeight, Conversion, ConversionKind, Engagement, EngagementKind, EventLog, Impression,
    LabelConfig, Labelled, MASKED_LABEL, StreamingConfig, StreamingFrequency, Surface, Touch,
    ValueWeighting, batches, engagement_impressions, label,
};

use crate::events::{engagement, impression as imp, purchase as conv};

const D: i64 = 86_400;

fn click(impression_id: i64, ts: i64, duration_s: Option<f32>) -> Engagement {
    Engagement {
        duration_s,
        ..engagement(impression_id, ts, EngagementKind::Click)
    }
}

fn save(impression_id: i64, ts: i64) -> Engagement {
    engagement(impression_id, ts, EngagementKind::Save)
}

fn log(
    imps: Vec<Impression>,
    engagements: Vec<Engagement>,
    conversions: Vec<Conversion>,
) -> EventLog {
    EventLog {
        impressions: imps.into_iter().collect(),
        engagements,
        conversions,
        ..EventLog::default()
    }
}

fn run(log: &EventLog, cfg: &LabelConfig, cutoff: i64) -> Labelled {
    let eng = engagement_impressions(log).expect("unique impression ids");
    label(log, &eng, cfg, cutoff, None).expect("valid input")
}

/// The peer's click weight: clamp(ln(1 + d) / ln(31), 0, 3).
fn w(d: f64) -> f32 {
    ((1.0 + d).ln() / 31f64.ln()).clamp(0.0, 3.0) as f32
}

/// The peer's self-test log: 14 impressions, 7 engagements, 10 conversions, and per conversion
/// the expected (impression id, via: 0 click, 1 view), or none.
fn peer_log() -> (EventLog, Vec<Option<(i64, u8)>>) {
    use Surface::*;
    let imps = vec![
        imp(1, 1, 0, 1, 101, HomeFeed),
        imp(2, 1, 0, 1, 102, HomeFeed),
        imp(3, 1, 0, 1, 103, HomeFeed),
        imp(4, 2, 100, 1, 104, Related),
        imp(5, 2, 100, 1, 105, Related),
        imp(6, 3, 2 * D, 1, 101, HomeFeed),
        imp(7, 4, 0, 2, 201, Search),
        imp(8, 4, 0, 2, 202, Search),
        imp(9, 5, 0, 3, 301, HomeFeed),
        imp(10, 6, 1000, 3, 301, HomeFeed),
        imp(11, 7, 10 * D, 4, 401, HomeFeed),
        imp(12, 8, 3 * D + 1, 4, 402, HomeFeed),
        imp(13, 9, 3 * D, 4, 403, HomeFeed),
        imp(14, 10, 5 * D, 4, 404, HomeFeed),
    ];
    let engs = vec![
        click(1, 10, Some(30.0)),
        save(4, 150),
        click(5, 160, Some(0.5)),
        click(9, 5, Some(20000.0)),
        click(9, 20, Some(100000.0)),
        click(10, 1010, Some(10.0)),
        click(12, 3 * D + 2, Some(1.0)),
    ];
    let convs = [
        (conv(3 * D, 1, 101), Some((1, 0))), // click-through beats the later view of impression 6
        (conv(3600, 2, 201), Some((7, 1))),  // view-through
        (conv(D + 1, 2, 202), None),         // 1 s past the view window
        (conv(1010 + 7 * D + 1, 3, 301), None), // 1 s past the last click's window
        (conv(12, 3, 301), Some((9, 0))),    // between two clicks of impression 9
        (conv(2000, 3, 301), Some((10, 0))), // the last click is impression 10's
        (conv(3 * D + 100, 4, 402), Some((12, 0))), // credited, but impression 12 is not mature
        (conv(3 * D + 50, 4, 403), Some((13, 1))), // mature exactly at the boundary
        (conv(5 * D + 10, 4, 404), Some((14, 1))), // credited, immature, no engagement: no positive
        (conv(155, 1, 105), Some((5, 1))), // the click came after: view-through of the same impression
    ];
    let expected = convs.iter().map(|c| c.1).collect();
    (
        log(imps, engs, convs.into_iter().map(|c| c.0).collect()),
        expected,
    )
}

#[test]
fn peer_self_test() {
    let (log, expected) = peer_log();
    assert_eq!(log.num_events(), 31);
    let cutoff = 10 * D; // the largest impression ts
    let mut seen_hn: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
    for seed in 0..16 {
        let cfg = LabelConfig {
            seed,
            ..LabelConfig::default()
        };
        let l = run(&log, &cfg, cutoff);
        let got: Vec<Option<(i64, u8)>> = (0..log.conversions.len())
            .map(|c| {
                l.attribution.get(c).map(|(i, t)| {
                    let via = u8::from(t == Touch::View);
                    (log.impressions.impression_id[i as usize], via)
                })
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!((l.stats.attributed(), l.stats.unattributed), (8, 2));

        let bs = batches(&l, 3, seed).expect("valid");
        assert_eq!(
            bs.iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![3, 3, 2]
        );
        let mut rows: BTreeMap<i64, Vec<Row>> = BTreeMap::new();
        for b in &bs {
            for k in 0..b.len() {
                rows.entry(b.pin_id[k]).or_default().push(Row {
                    le: b.label_engagement[k],
                    lc: b.label_conversion[k],
                    we: b.weight_engagement[k],
                    wc: b.weight_conversion[k],
                    surface: b.surface[k],
                    hn: b.hard_negatives.valid()[k].then_some(b.hard_negatives.pins()[k]),
                    log_q: b.log_q[k],
                    hn_log_q: b.hard_negatives.log_q()[k],
                });
            }
        }
        assert_eq!(
            rows.keys().copied().collect::<Vec<_>>(),
            vec![101, 104, 105, 201, 301, 402, 403]
        );
        assert_eq!(rows[&301].len(), 2);
        let expect: [(i64, u8, i8, f32, f32, u8); 6] = [
            (101, 1, 1, w(30.0), 1.0, 0),
            (104, 1, 0, 1.0, 0.0, 1),
            (105, 1, 1, w(0.5), 1.0, 1),
            (201, 0, 1, 0.0, 1.0, 2),
            (402, 1, -1, w(1.0), 0.0, 0),
            (403, 0, 1, 0.0, 1.0, 0),
        ];
        for (pin, le, lc, we, wc, surface) in expect {
            let r = &rows[&pin][0];
            assert_eq!(
                (r.le, r.lc, r.wc, r.surface),
                (le, lc, wc, surface),
                "pin {pin}"
            );
            assert!((r.we - we).abs() < 1e-6, "pin {pin}: {} vs {we}", r.we);
        }
        let mut w301: Vec<f32> = rows[&301].iter().map(|r| r.we).collect();
        w301.sort_by(f32::total_cmp);
        assert_eq!(w301, vec![w(10.0), 3.0]);
        for (pin, rs) in &rows {
            let share = if *pin == 301 { 2.0 } else { 1.0 } / 8.0;
            for r in rs {
                assert!((r.log_q - (share as f32).ln()).abs() < 1e-6, "pin {pin}");
            }
        }

        let hn: BTreeMap<i64, Option<i64>> = rows.iter().map(|(p, rs)| (*p, rs[0].hn)).collect();
        for p in [101, 104, 105] {
            let drawn = hn[&p].expect("a hard negative");
            assert!([102, 103].contains(&drawn), "pin {p}: {drawn}");
            seen_hn.entry(p).or_default().insert(drawn);
        }
        assert_eq!(hn[&201], Some(202));
        assert!(rows[&301].iter().all(|r| r.hn.is_none()));
        assert_eq!((hn[&402], hn[&403]), (None, None));
        assert_eq!(l.stats.hard_negatives(), 4);
        // 104 and 105's request has no candidate: theirs come from user 1's day 0.
        assert_eq!(l.stats.hard_negatives_from_same_day, 2);
        let drawn: Vec<i64> = rows.values().flatten().filter_map(|r| r.hn).collect();
        for r in rows.values().flatten() {
            let want = match r.hn {
                Some(h) => (drawn.iter().filter(|&&d| d == h).count() as f32 / 4.0).ln(),
                None => 0.0,
            };
            assert!((r.hn_log_q - want).abs() < 1e-6);
        }
        assert!((rows[&201][0].hn_log_q - 0.25f32.ln()).abs() < 1e-6);
        assert_eq!(l.stats.masked_conversion_labels, 1);
    }
    // Both candidates get drawn for each of 101, 104 and 105 over the seeds.
    assert!(
        seen_hn.values().all(|v| *v == BTreeSet::from([102, 103])),
        "{seen_hn:?}"
    );
}

struct Row {
    le: u8,
    lc: i8,
    we: f32,
    wc: f32,
    surface: u8,
    /// The slot's hard negative, `None` for an empty slot.
    hn: Option<i64>,
    log_q: f32,
    hn_log_q: f32,
}

/// The positive of impression id `id`: its index in `l`.
fn positive(log: &EventLog, l: &Labelled, id: i64) -> Option<usize> {
    l.impression
        .iter()
        .position(|&i| log.impressions.impression_id[i as usize] == id)
}

fn credited(log: &EventLog, l: &Labelled, c: usize) -> Option<(i64, Touch)> {
    l.attribution
        .get(c)
        .map(|(i, t)| (log.impressions.impression_id[i as usize], t))
}

#[test]
fn ties_on_time_go_to_the_larger_impression_id() {
    use Surface::HomeFeed;
    // Impressions 5 and 8 of the same pair at the same second, both clicked at the same second;
    // impressions 20 and 30 shown at the same second, never clicked.
    let log = log(
        vec![
            imp(8, 1, 100, 1, 7, HomeFeed),
            imp(5, 2, 100, 1, 7, HomeFeed),
            imp(30, 3, 500, 2, 7, HomeFeed),
            imp(20, 4, 500, 2, 7, HomeFeed),
        ],
        vec![click(5, 110, None), click(8, 110, None)],
        vec![conv(200, 1, 7), conv(600, 2, 7)],
    );
    let l = run(&log, &LabelConfig::default(), 100 * D);
    assert_eq!(credited(&log, &l, 0), Some((8, Touch::Click)));
    assert_eq!(credited(&log, &l, 1), Some((30, Touch::View)));
}

#[test]
fn click_after_the_conversion_falls_to_view_through() {
    use Surface::HomeFeed;
    let log = log(
        vec![imp(1, 1, 0, 1, 7, HomeFeed), imp(2, 2, 10, 1, 7, HomeFeed)],
        // Impression 1's click comes after the conversion; impression 2 has none.
        vec![click(1, 60, Some(5.0))],
        vec![conv(50, 1, 7)],
    );
    let l = run(&log, &LabelConfig::default(), 100 * D);
    // The last impression before the conversion (2), not the clicked one.
    assert_eq!(credited(&log, &l, 0), Some((2, Touch::View)));
    // Windows: a click 7 d + 1 s before is too old, and so is an impression 1 d + 1 s before.
    let late = self::log(
        vec![imp(1, 1, 0, 1, 7, HomeFeed), imp(2, 2, 0, 1, 8, HomeFeed)],
        vec![click(1, 10, None)],
        vec![conv(10 + 7 * D + 1, 1, 7), conv(D + 1, 1, 8), conv(D, 1, 8)],
    );
    let l = run(&late, &LabelConfig::default(), 100 * D);
    assert_eq!(credited(&late, &l, 0), None);
    assert_eq!(credited(&late, &l, 1), None);
    assert_eq!(credited(&late, &l, 2), Some((2, Touch::View)));
    assert_eq!(l.stats.unattributed, 2);
}

#[test]
fn click_weights_several_clicks_missing_and_negative_durations() {
    use Surface::HomeFeed;
    let imps = (1..=6).map(|i| imp(i, i, 0, 1, i, HomeFeed)).collect();
    let log = log(
        imps,
        vec![
            click(1, 1, Some(2.0)),
            click(1, 2, Some(30.0)), // the longest of impression 1's clicks
            click(2, 1, None),       // missing: 1
            click(2, 2, Some(0.5)),  // less than the missing one's 1
            click(3, 1, Some(-4.0)), // negative: 0
            click(4, 1, Some(1e9)),  // capped at 3
            click(5, 1, Some(f32::NAN)), // NaN counts as missing
            click(6, 1, Some(0.0)),
            save(6, 2), // a save outweighs a zero-length click
        ],
        vec![],
    );
    let l = run(&log, &LabelConfig::default(), 100 * D);
    let we = |id| l.weight_engagement[positive(&log, &l, id).expect("positive")];
    assert!((we(1) - 1.0).abs() < 1e-6);
    assert_eq!(we(2), 1.0);
    assert_eq!(we(3), 0.0);
    assert_eq!(we(4), 3.0);
    assert_eq!(we(5), 1.0);
    assert_eq!(we(6), 1.0);
    // A custom curve: scale 2 s, reference 10 s, cap 1.5.
    let cw = ClickWeight {
        scale_s: 2.0,
        reference_s: 10.0,
        max: 1.5,
        ..ClickWeight::default()
    };
    assert!((cw.weight(Some(10.0)) - 1.0).abs() < 1e-6);
    let flat = ClickWeight {
        by_duration: false,
        ..cw
    };
    assert_eq!(flat.weight(Some(0.5)), 1.0);
    assert_eq!(flat.weight(Some(500.0)), 1.0);
    assert!((cw.weight(Some(4.0)) - (3f32.ln() / 6f32.ln())).abs() < 1e-6);
    assert_eq!(cw.weight(Some(1e6)), 1.5);
    assert_eq!(cw.weight(None), 1.0);
}

#[test]
fn maturity_masks_recent_labels_and_conversions_are_not_filtered_by_the_cutoff() {
    use Surface::HomeFeed;
    let t = 20 * D;
    let log = log(
        vec![
            imp(1, 1, t - 7 * D, 1, 1, HomeFeed), // mature exactly at the cutoff
            imp(2, 2, t - 7 * D + 1, 1, 2, HomeFeed), // immature, clicked and converted
            imp(3, 3, t - D, 1, 3, HomeFeed),     // immature, converted only
            imp(4, 4, t - 9 * D, 1, 4, HomeFeed), // mature, clicked, not converted
        ],
        vec![click(2, t - 7 * D + 5, None), click(4, t - 9 * D, None)],
        vec![
            conv(t + D, 1, 1), // after the cutoff, still credited (view-through, 1 d): label 1
            conv(t - D, 1, 2),
            conv(t, 1, 3),
        ],
    );
    let l = run(&log, &LabelConfig::default(), t);
    let at = |id| positive(&log, &l, id);
    assert_eq!(
        l.stats.attributed(),
        2,
        "conversion of impression 1 is 8 d after it"
    );
    assert_eq!(at(1), None, "not converted, not engaged: no positive");
    let p2 = at(2).expect("an immature click is a positive");
    assert_eq!(
        (l.label_engagement[p2], l.label_conversion[p2]),
        (1, MASKED_LABEL)
    );
    assert_eq!(l.weight_conversion[p2], 0.0);
    assert_eq!(at(3), None, "converted but immature: no positive");
    let p4 = at(4).expect("clicked");
    assert_eq!(l.label_conversion[p4], 0);
    assert_eq!(l.stats.attributed_to_immature, 2);
    assert_eq!(l.stats.masked_conversion_labels, 1);

    // Within the view window after the cutoff, impression 1's conversion labels it.
    let mut log2 = log.clone();
    log2.conversions[0].ts = t - 7 * D + 3600;
    let l = run(&log2, &LabelConfig::default(), t);
    let p1 = positive(&log2, &l, 1).expect("mature and converted");
    assert_eq!((l.label_engagement[p1], l.label_conversion[p1]), (0, 1));
    assert_eq!(
        (l.weight_engagement[p1], l.weight_conversion[p1]),
        (0.0, 1.0)
    );
}

#[test]
fn conversion_weights_by_kind_and_value() {
    use Surface::HomeFeed;
    let kinded = |ts, pin, kind, value| Conversion {
        ts,
        user_id: 1,
        pin_id: pin,
        kind,
        value,
    };
    let log = log(
        vec![imp(1, 1, 0, 1, 1, HomeFeed), imp(2, 2, 0, 1, 2, HomeFeed)],
        vec![],
        vec![
            kinded(10, 1, ConversionKind::AddToCart, None),
            kinded(20, 1, ConversionKind::Checkout, Some(3.0)),
            kinded(30, 2, ConversionKind::Purchase, Some(100.0)),
        ],
    );
    let l = run(&log, &LabelConfig::default(), 100 * D);
    let wc = |l: &Labelled, id| l.weight_conversion[positive(&log, l, id).expect("converted")];
    assert_eq!(
        wc(&l, 1),
        0.7,
        "the larger of add_to_cart 0.4 and checkout 0.7"
    );
    assert_eq!(wc(&l, 2), 1.0);
    let cfg = LabelConfig {
        value_weighting: ValueWeighting::Log,
        ..LabelConfig::default()
    };
    let l = run(&log, &cfg, 100 * D);
    assert!((wc(&l, 1) - 0.7 * (1.0 + 4f32.ln())).abs() < 1e-6);
    assert!((wc(&l, 2) - (1.0 + 101f32.ln())).abs() < 1e-5);
}

#[test]
fn hard_negatives_request_first_then_same_utc_day_then_none() {
    use Surface::HomeFeed;
    // User 1, day 5: request 1 = {1 clicked, 2 clicked}; request 2 = {3 clicked, 4, 5, 6}.
    // Impression 7 (day 5, request 3) is a candidate; 8 is the next UTC day's; 9 another user's.
    let d5 = 5 * D;
    let log = log(
        vec![
            imp(1, 1, d5 + 10, 1, 11, HomeFeed),
            imp(2, 1, d5 + 10, 1, 12, HomeFeed),
            imp(3, 2, d5 + 20, 1, 13, HomeFeed),
            imp(4, 2, d5 + 20, 1, 14, HomeFeed),
            imp(5, 2, d5 + 20, 1, 15, HomeFeed),
            imp(6, 2, d5 + 20, 1, 16, HomeFeed),
            imp(7, 3, d5 + D - 1, 1, 17, HomeFeed),
            imp(8, 4, d5 + D, 1, 18, HomeFeed),
            imp(9, 5, d5, 2, 19, HomeFeed),
            imp(10, 6, 9 * D, 3, 20, HomeFeed), // a lone positive: no candidate anywhere
        ],
        vec![
            click(1, d5 + 11, None),
            click(2, d5 + 11, None),
            click(3, d5 + 21, None),
            click(10, 9 * D + 1, None),
        ],
        vec![],
    );
    let cfg = LabelConfig {
        hard_negatives_per_positive: 3,
        ..LabelConfig::default()
    };
    let l = run(&log, &cfg, 100 * D);
    let ids = |k: usize| -> Vec<i64> {
        l.hard_negatives(k)
            .iter()
            .map(|&i| log.impressions.impression_id[i as usize])
            .collect()
    };
    let p = |id| positive(&log, &l, id).expect("clicked");
    // Request 2 has three candidates: all of them, distinct.
    let mut r2 = ids(p(3));
    r2.sort_unstable();
    assert_eq!(r2, vec![4, 5, 6]);
    // Request 1 has none: the same user's candidates of that UTC day (not 8, the next day's).
    for id in [1, 2] {
        let mut got = ids(p(id));
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), 3, "three distinct: {got:?}");
        assert!(got.iter().all(|g| [4, 5, 6, 7].contains(g)), "{got:?}");
    }
    assert!(ids(p(10)).is_empty());
    let slots = &l.hard_negative[p(10) * 3..p(10) * 3 + 3];
    assert_eq!(slots, &[NONE; 3]);
    assert_eq!(l.stats.positives_without_hard_negative, 1);
    assert_eq!(l.stats.hard_negatives_from_request, 3);
    assert_eq!(l.stats.hard_negatives_from_same_day, 6);

    let off = LabelConfig {
        hard_negatives_per_positive: 0,
        ..LabelConfig::default()
    };
    let l = run(&log, &off, 100 * D);
    assert!(l.hard_negative.is_empty());
    assert_eq!(
        (
            l.stats.hard_negatives(),
            l.stats.positives_without_hard_negative
        ),
        (0, 0)
    );
}

#[test]
fn converted_impressions_are_never_hard_negatives_even_when_immature() {
    use Surface::HomeFeed;
    let log = log(
        vec![
            imp(1, 1, 0, 1, 1, HomeFeed),
            imp(2, 1, 0, 1, 2, HomeFeed), // converted, immature (cutoff 1 d)
            imp(3, 1, 0, 1, 3, HomeFeed),
        ],
        vec![click(1, 5, None)],
        vec![conv(100, 1, 2)],
    );
    for seed in 0..20 {
        let cfg = LabelConfig {
            seed,
            ..LabelConfig::default()
        };
        let l = run(&log, &cfg, D);
        assert_eq!(l.len(), 1);
        assert_eq!(
            l.hard_negatives(0),
            &[2],
            "impression row 2 (id 3), never id 2"
        );
    }
}

#[test]
fn scope_limits_positives_and_candidates_but_not_attribution() {
    use Surface::HomeFeed;
    let log = log(
        vec![
            imp(1, 1, 0, 1, 1, HomeFeed),
            imp(2, 1, 0, 1, 2, HomeFeed),
            imp(3, 1, 0, 1, 3, HomeFeed),
            imp(4, 2, 50, 1, 1, HomeFeed),
        ],
        vec![click(1, 5, None), click(4, 55, None)],
        vec![conv(100, 1, 1)],
    );
    let eng = engagement_impressions(&log).expect("valid");
    let scope = [true, true, false, false];
    let cfg = LabelConfig::default();
    let l = label(&log, &eng, &cfg, 100 * D, Some(&scope)).expect("valid");
    assert_eq!(l.impression, vec![0], "impression 4 is out of scope");
    assert_eq!(l.hard_negatives(0), &[1], "impression 3 is out of scope");
    // The conversion goes to the last click, out of scope or not.
    assert_eq!(credited(&log, &l, 0), Some((4, Touch::Click)));
    assert_eq!(l.label_conversion[0], 0);
    assert!(label(&log, &eng, &cfg, 0, Some(&scope[..3])).is_err());
    assert!(label(&log, &eng[..1], &cfg, 0, None).is_err());
}

#[test]
fn row_order_and_request_grouping_do_not_change_the_result() {
    // The peer log, rows reversed: request ids fall, so the sorted request index is used
    // instead of runs; the draw hashes ids, so every choice is the same.
    let (log, _) = peer_log();
    let mut reversed = log.clone();
    let n = log.impressions.len();
    reversed.impressions = (0..n).rev().map(|i| log.impressions.get(i)).collect();
    reversed.engagements.reverse();
    for seed in 0..8 {
        let cfg = LabelConfig {
            seed,
            hard_negatives_per_positive: 2,
            ..LabelConfig::default()
        };
        let key = |log: &EventLog, l: &Labelled| -> BTreeMap<i64, (u8, i8, u32, u32, Vec<i64>)> {
            (0..l.len())
                .map(|k| {
                    let id = log.impressions.impression_id[l.impression[k] as usize];
                    let hn = l
                        .hard_negatives(k)
                        .iter()
                        .map(|&i| log.impressions.impression_id[i as usize])
                        .collect();
                    let v = (
                        l.label_engagement[k],
                        l.label_conversion[k],
                        l.weight_engagement[k].to_bits(),
                        l.weight_conversion[k].to_bits(),
                        hn,
                    );
                    (id, v)
                })
                .collect()
        };
        let a = run(&log, &cfg, 10 * D);
        let b = run(&reversed, &cfg, 10 * D);
        assert_eq!(key(&log, &a), key(&reversed, &b));
        assert_eq!(a.stats, b.stats);
    }
}

#[test]
fn batches_are_seeded_shuffles_of_all_positives() {
    let (log, _) = peer_log();
    let l = run(&log, &LabelConfig::default(), 10 * D);
    let a = batches(&l, 5, 1).expect("valid");
    let b = batches(&l, 5, 1).expect("valid");
    let c = batches(&l, 5, 2).expect("valid");
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.iter().map(|x| x.len()).collect::<Vec<_>>(), vec![5, 3]);
    let mut pins: Vec<i64> = a.iter().flat_map(|x| x.pin_id.iter().copied()).collect();
    pins.sort_unstable();
    let mut want: Vec<i64> = l
        .impression
        .iter()
        .map(|&i| log.impressions.pin_id[i as usize])
        .collect();
    want.sort_unstable();
    assert_eq!(pins, want);
    assert!(batches(&l, 0, 1).is_err());
    let mut broken = l.clone();
    broken.log_q.pop();
    assert!(batches(&broken, 3, 1).is_err());
}

#[test]
fn duplicate_impression_ids_and_orphans() {
    use Surface::HomeFeed;
    let mut log = log(
        vec![imp(3, 1, 0, 1, 1, HomeFeed), imp(9, 1, 0, 1, 2, HomeFeed)],
        vec![click(9, 1, None), click(4, 1, None)],
        vec![],
    );
    assert_eq!(engagement_impressions(&log).expect("valid"), vec![1, NONE]);
    let l = run(&log, &LabelConfig::default(), 0);
    assert_eq!(l.stats.orphan_engagements, 1);
    log.impressions.impression_id[0] = 9;
    let err = engagement_impressions(&log).expect_err("duplicate id");
    assert!(err.to_string().contains("impression_id"), "{err}");
}

#[test]
fn bad_label_configs_name_their_key() {
    for (cfg, key) in [
        (
            LabelConfig {
                hard_negatives_per_positive: 9,
                ..LabelConfig::default()
            },
            "hard_negatives_per_positive",
        ),
        (
            LabelConfig {
                click_weight: ClickWeight {
                    scale_s: 0.0,
                    ..ClickWeight::default()
                },
                ..LabelConfig::default()
            },
            "click_weight.scale_s",
        ),
        (
            LabelConfig {
                save_weight: f32::NAN,
                ..LabelConfig::default()
            },
            "save_weight",
        ),
        (
            LabelConfig {
                view_window_s: -1,
                ..LabelConfig::default()
            },
            "view_window_days",
        ),
    ] {
        let err = cfg.validate().expect_err(key);
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn streaming_estimate_converges_to_the_exact_frequencies() {
    use rand::{Rng, SeedableRng};
    // A stationary stream over 200 items with Zipf-like shares, 32 occurrences per step.
    let items = 200usize;
    let raw: Vec<f64> = (1..=items).map(|r| 1.0 / (r as f64).powf(1.1)).collect();
    let total: f64 = raw.iter().sum();
    let share: Vec<f64> = raw.iter().map(|x| x / total).collect();
    let cum: Vec<f64> = share
        .iter()
        .scan(0.0, |acc, s| {
            *acc += s;
            Some(*acc)
        })
        .collect();
    let cfg = StreamingConfig {
        buckets: 1 << 12,
        learning_rate: 0.0005,
        hashes: 2,
    };
    let mut est = StreamingFrequency::new(&cfg).expect("valid");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let per_step = 32;
    for _ in 0..40_000 {
        let step: Vec<u64> = (0..per_step)
            .map(|_| {
                let x: f64 = rng.random();
                cum.partition_point(|&c| c < x).min(items - 1) as u64
            })
            .collect();
        est.observe(step);
    }
    let mut checked = 0;
    for (item, &p) in share.iter().enumerate().filter(|(_, p)| **p >= 0.01) {
        let q = f64::from(est.log_q(item as u64, per_step)).exp();
        assert!(
            (q - p).abs() <= 0.1 * p,
            "item {item}: estimate {q:.5} vs share {p:.5}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "{checked} items with a 1% share");
    // An item never seen gets a small probability, not an infinite log.
    assert!(est.log_q(10_000_000, per_step) < (1.0f32 / 40_000.0).ln());
    assert!(StreamingFrequency::new(&StreamingConfig { hashes: 0, ..cfg }).is_err());
}

/// A streaming estimate rebuilt from its state gives the same estimates and evolves the same
/// way; a state that does not fit the settings is refused.
#[test]
fn a_streaming_estimate_restored_from_its_state_continues_identically() {
    let cfg = StreamingConfig {
        buckets: 64,
        learning_rate: 0.1,
        hashes: 3,
    };
    let mut a = StreamingFrequency::new(&cfg).expect("valid");
    for step in 0..30u64 {
        a.observe((0..5).map(|i| (step * 7 + i * i) % 41));
    }
    let state = a.state();
    assert!(!state.cells.is_empty() && state.cells.len() < 64 * 3);
    let mut b = StreamingFrequency::from_state(&cfg, &state).expect("fits");
    for step in 0..10u64 {
        a.observe([step, step + 1]);
        b.observe([step, step + 1]);
    }
    for item in 0..50 {
        assert_eq!(
            a.log_q(item, 5).to_bits(),
            b.log_q(item, 5).to_bits(),
            "{item}"
        );
    }
    let mut outside = state.clone();
    outside.cells[0].index = 64 * 3;
    assert!(StreamingFrequency::from_state(&cfg, &outside).is_err());
    let mut future = state;
    future.cells[0].last = future.step + 1;
    assert!(StreamingFrequency::from_state(&cfg, &future).is_err());
}
