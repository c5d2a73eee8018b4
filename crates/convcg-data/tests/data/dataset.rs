//! Dataset::build on a hand-made log whose every answer is known.

use convcg_data::{
    Conversion, ConversionKind, Dataset, DatasetConfig, Engagement, EngagementKind, EventLog,
    Impression, PinRecord, Surface, Task, UserRecord,
};

use crate::events::{engagement, impression, purchase};

const DAY: i64 = 86_400;
const P0: u32 = 0;
const P1: u32 = 1;
const P2: u32 = 2;
const P3: u32 = 3;
const U0: u32 = 0;
const U1: u32 = 1;
const U2: u32 = 2;

fn pin(
    pin_id: i64,
    advertiser_id: i64,
    category_id: i64,
    brand_id: Option<i64>,
    price: Option<f32>,
    f: f32,
) -> PinRecord {
    PinRecord {
        pin_id,
        advertiser_id,
        category_id,
        brand_id,
        price,
        dense: vec![f],
    }
}

fn imp(
    id: i64,
    ts: i64,
    user: i64,
    pin: i64,
    surface: Surface,
    ctx: Option<i64>,
    query: Option<i64>,
) -> Impression {
    Impression {
        position: Some(1),
        context_pin_id: ctx,
        query_id: query,
        ..impression(id, id, ts, user, pin, surface)
    }
}

fn eng(impression_id: i64, ts: i64, kind: EngagementKind) -> Engagement {
    Engagement {
        duration_s: (kind == EngagementKind::Click).then_some(10.0),
        ..engagement(impression_id, ts, kind)
    }
}

fn conv(ts: i64, user_id: i64, pin_id: i64) -> Conversion {
    Conversion {
        value: Some(10.0),
        ..purchase(ts, user_id, pin_id)
    }
}

/// Pins 100..103 (P3 only ever shown in the eval window, of an advertiser and category seen
/// nowhere else), users 1000..1002 (U2 only in the eval window). Train is before day 13.
fn tiny_log() -> EventLog {
    use Surface::*;
    let mut impressions = vec![
        imp(1, DAY, 1000, 100, HomeFeed, None, None),
        imp(2, 2 * DAY, 1000, 100, HomeFeed, None, None),
        imp(3, 3 * DAY, 1000, 100, HomeFeed, None, None),
        imp(4, 4 * DAY, 1000, 101, Related, Some(100), None),
        imp(5, 5 * DAY, 1001, 102, Search, None, Some(77)),
        imp(6, 6 * DAY, 1001, 101, HomeFeed, None, None),
        imp(7, 3 * DAY + 50, 1000, 100, Related, Some(102), None),
        imp(8, 14 * DAY, 1000, 102, Related, Some(101), None),
        imp(9, 15 * DAY, 1000, 103, Related, Some(100), None),
        imp(10, 16 * DAY, 1000, 100, Related, Some(102), None),
        imp(11, 17 * DAY, 1002, 103, HomeFeed, None, None),
        imp(12, 20 * DAY, 1001, 100, Search, None, Some(77)),
    ];
    // Out of id order, so that the impression lookup cannot rely on it.
    impressions.reverse();
    EventLog {
        pins: vec![
            pin(100, 1, 10, Some(5), Some(10.0), 1.0),
            pin(101, 1, 11, None, None, 2.0),
            pin(102, 2, 12, Some(6), Some(100.0), 3.0),
            pin(103, 3, 13, Some(7), Some(50.0), 4.0),
        ],
        users: vec![
            UserRecord {
                user_id: 1000,
                categorical: Vec::new(),
                dense: vec![0.0],
            },
            UserRecord {
                user_id: 1001,
                categorical: Vec::new(),
                dense: vec![1.0],
            },
            UserRecord {
                user_id: 1002,
                categorical: Vec::new(),
                dense: vec![2.0],
            },
        ],
        impressions: impressions.into_iter().collect(),
        engagements: vec![
            eng(2, 2 * DAY + 10, EngagementKind::Click),
            eng(3, 3 * DAY + 10, EngagementKind::Click),
            eng(5, 5 * DAY + 5, EngagementKind::Save),
            eng(6, 6 * DAY + 20, EngagementKind::Click),
            eng(9, 15 * DAY + 10, EngagementKind::Click),
            eng(10, 16 * DAY + 5, EngagementKind::Click),
            eng(11, 17 * DAY + 3, EngagementKind::Save),
            eng(999, 17 * DAY, EngagementKind::Click),
        ],
        conversions: vec![
            // Clicks on impressions 2 and 3, a later unclicked impression 7: the last click (3) wins.
            conv(3 * DAY + 100, 1000, 100),
            // No click: view-through to impression 4.
            conv(4 * DAY + 3600, 1000, 101),
            // Two days after an unclicked impression: outside the view window.
            conv(7 * DAY, 1001, 102),
            // Eight days after the click: outside the click window.
            conv(14 * DAY, 1001, 101),
            // Unknown user.
            conv(3 * DAY, 9999, 100),
            // In the eval window, after the click on impression 9.
            conv(18 * DAY, 1000, 103),
            // After the window start, attributed to a train-window click: straddles the split.
            conv(13 * DAY, 1001, 101),
        ],
        pin_dense_names: vec!["f_0".into()],
        user_dense_names: vec!["f_0".into()],
        user_categorical_names: Vec::new(),
    }
}

fn true_conversions() -> Vec<Conversion> {
    vec![
        conv(18 * DAY, 1000, 103),
        conv(14 * DAY + 3600, 1000, 102),
        conv(2 * DAY, 1000, 100),
    ]
}

fn build() -> Dataset {
    Dataset::build(
        &tiny_log(),
        Some(&true_conversions()),
        &DatasetConfig::default(),
    )
    .expect("valid log")
}

#[test]
fn attribution_click_beats_view_last_touch_wins_outside_window_dropped() {
    let d = build();
    let s = d.stats();
    assert_eq!(s.attributed_click_through, 3, "{s}");
    assert_eq!(s.attributed_view_through, 1, "{s}");
    assert_eq!(s.unattributed, 3, "{s}");
    assert_eq!(s.unknown_id_conversions, 1, "{s}");
    assert_eq!(s.straddling_conversions, 1, "{s}");
    assert_eq!(s.orphan_engagements, 1, "{s}");
    let mut convs: Vec<_> = d
        .train()
        .iter()
        .filter(|e| e.label_conversion == 1)
        .collect();
    convs.sort_by_key(|e| e.key.ts);
    assert_eq!(convs.len(), 3);
    // The last click (impression 3, home feed at day 3), not the later unclicked related impression 7.
    assert_eq!(convs[0].pin, P0);
    assert_eq!(convs[0].key.ts, 3 * DAY);
    assert_eq!(convs[0].key.surface, Surface::HomeFeed);
    assert_eq!(convs[0].key.context_pin, None);
    // View-through: impression 4, related with context P0; a conversion-only positive.
    assert_eq!(convs[1].pin, P1);
    assert_eq!(convs[1].key.ts, 4 * DAY);
    assert_eq!(convs[1].key.context_pin, Some(P0));
    assert!(!convs[1].label_engagement);
    // The conversion at the window start credits impression 6's click (day 6, mature exactly at
    // the cutoff): conversions are not filtered by the cutoff.
    assert_eq!((convs[2].pin, convs[2].key.ts), (P1, 6 * DAY));
    assert!(convs[2].label_engagement);
}

/// The click weight of the tiny log's 10 s clicks.
fn w10() -> f32 {
    (11f64.ln() / 31f64.ln()) as f32
}

#[test]
fn examples_are_engaged_or_converted_train_impressions_with_both_labels() {
    let d = build();
    let mut rows: Vec<(u32, i64, bool, i8, f32, f32, f32)> = d
        .train()
        .iter()
        .map(|e| {
            (
                e.pin,
                e.key.ts,
                e.label_engagement,
                e.label_conversion,
                e.weight_engagement,
                e.weight_conversion,
                e.weight,
            )
        })
        .collect();
    rows.sort_by_key(|r| (r.0, r.1));
    let w = w10();
    assert_eq!(
        rows,
        vec![
            (P0, 2 * DAY, true, 0, w, 0.0, w),
            (P0, 3 * DAY, true, 1, w, 1.0, w + 1.0),
            (P1, 4 * DAY, false, 1, 0.0, 1.0, 1.0),
            (P1, 6 * DAY, true, 1, w, 1.0, w + 1.0),
            (P2, 5 * DAY, true, 0, 1.0, 0.0, 1.0),
        ]
    );
    let s = d.stats();
    assert_eq!(
        (
            s.train_positives,
            s.train_engagement_examples,
            s.train_conversion_examples,
            s.masked_conversion_labels
        ),
        (5, 4, 3, 0)
    );
    assert_eq!(d.pin_counts(Task::Engagement), vec![2.0, 1.0, 1.0, 0.0]);
    assert_eq!(d.pin_counts(Task::Conversion), vec![1.0, 2.0, 0.0, 0.0]);

    // Task scales enter the row weight: engagement_weight x we + conversion_weight x wc.
    let scaled = Dataset::build(
        &tiny_log(),
        None,
        &DatasetConfig {
            engagement_weight: 0.5,
            conversion_weight: 3.0,
            ..DatasetConfig::default()
        },
    )
    .expect("valid");
    for e in scaled.train() {
        let want = 0.5 * e.weight_engagement + 3.0 * e.weight_conversion;
        assert!((e.weight - want).abs() < 1e-6);
    }
}

#[test]
fn hard_negatives_and_log_q_in_batches() {
    let d = build();
    // Every request holds one impression, so hard negatives come from the same user's day:
    // only day 3 of U0 has a candidate, impression 7 (P0, unclicked, unconverted).
    let s = d.stats();
    assert_eq!(
        (
            s.hard_negatives_from_request,
            s.hard_negatives_from_same_day,
            s.positives_without_hard_negative
        ),
        (0, 1, 4)
    );
    let with_hn: Vec<_> = d
        .train()
        .iter()
        .filter(|e| !e.hard_negatives.is_empty())
        .collect();
    assert_eq!(with_hn.len(), 1);
    assert_eq!(
        (with_hn[0].key.ts, with_hn[0].hard_negatives.as_slice()),
        (3 * DAY, &[P0][..])
    );

    let all: Vec<usize> = (0..d.train().len()).collect();
    let mut exact = d.log_q_estimator().expect("valid");
    assert!(!exact.is_streaming());
    let batch = d.batch(&all, &mut exact);
    assert_eq!(batch.hard_negatives.per_positive(), 1);
    assert_eq!(batch.hard_negatives.len(), 5);
    let shares = [2.0f32 / 5.0, 2.0 / 5.0, 1.0 / 5.0];
    for (k, e) in d.train().iter().enumerate() {
        assert!((batch.log_q[k] - shares[e.pin as usize].ln()).abs() < 1e-6);
        let valid = !e.hard_negatives.is_empty();
        let slots = &batch.hard_negatives;
        assert_eq!(slots.valid()[k], valid);
        if valid {
            assert_eq!(slots.pins()[k], P0);
            assert_eq!(slots.log_q()[k], 0.0, "ln(1 / 1)");
        } else {
            assert_eq!(slots.pins()[k], e.pin, "an empty slot holds the row's pin");
            assert_eq!(slots.log_q()[k], 0.0);
        }
    }
    let cands = batch.candidate_pins();
    let q = batch.candidate_log_q();
    assert_eq!((cands.len(), q.len()), (10, 10));
    assert_eq!(&cands[..5], &batch.pins[..]);
    for k in 0..5 {
        assert_eq!(q[5 + k].is_infinite(), !batch.hard_negatives.valid()[k]);
        assert!(q[5 + k] > 0.0 || batch.hard_negatives.valid()[k]);
    }
    assert_eq!(
        batch.label_conversion.iter().filter(|&&l| l == 1).count(),
        3
    );
    assert_eq!(d.hard_negative_log_q()[P0 as usize], 0.0);
    assert_eq!(d.hard_negative_log_q()[P1 as usize], f32::NEG_INFINITY);

    // Streaming log q: finite, at most 0, for positives and drawn hard negatives.
    let streaming = Dataset::build(
        &tiny_log(),
        None,
        &DatasetConfig {
            log_q: convcg_data::LogQMode::Streaming,
            ..DatasetConfig::default()
        },
    )
    .expect("valid");
    let mut est = streaming.log_q_estimator().expect("valid");
    assert!(est.is_streaming());
    for _ in 0..3 {
        let b = streaming.batch(&all, &mut est);
        assert!(b.log_q.iter().all(|q| q.is_finite() && *q <= 0.0));
        let drawn: Vec<f32> = (0..5)
            .filter(|&k| b.hard_negatives.valid()[k])
            .map(|k| b.hard_negatives.log_q()[k])
            .collect();
        assert_eq!(drawn, vec![0.0], "the only drawn pin is all of its stream");
    }

    // A batch split over two ranks: with the whole batch's pins observed (here two halves
    // exchanged in rank order, as an all-gather would), each half's log q is the whole batch's
    // rows of it, step after step.
    let (mut whole_est, mut first_est, mut second_est) = (
        streaming.log_q_estimator().expect("valid"),
        streaming.log_q_estimator().expect("valid"),
        streaming.log_q_estimator().expect("valid"),
    );
    let (head, tail) = all.split_at(all.len() / 2);
    assert!(!head.is_empty() && !tail.is_empty());
    for _ in 0..3 {
        let whole = streaming.batch(&all, &mut whole_est);
        let rank_part = |part: &[usize], est: &mut convcg_data::LogQEstimator| {
            streaming.batch_part(part, est, |pins, drawn| {
                let other = if part == head { tail } else { head };
                let theirs = streaming.batch(other, &mut streaming.log_q_estimator().unwrap());
                let their_drawn: Vec<u32> = theirs
                    .hard_negatives
                    .pins()
                    .iter()
                    .zip(theirs.hard_negatives.valid())
                    .filter(|(_, v)| **v)
                    .map(|(&p, _)| p)
                    .collect();
                if part == head {
                    ([pins, theirs.pins].concat(), [drawn, their_drawn].concat())
                } else {
                    ([theirs.pins, pins].concat(), [their_drawn, drawn].concat())
                }
            })
        };
        let (a, b) = (
            rank_part(head, &mut first_est),
            rank_part(tail, &mut second_est),
        );
        assert_eq!([a.log_q.clone(), b.log_q.clone()].concat(), whole.log_q);
        let hard = |x: &convcg_data::Batch| x.hard_negatives.log_q().to_vec();
        assert_eq!([hard(&a), hard(&b)].concat(), hard(&whole));
    }

    // No hard negatives: the candidates are the positives.
    let off = Dataset::build(
        &tiny_log(),
        None,
        &DatasetConfig {
            hard_negatives_per_positive: 0,
            ..DatasetConfig::default()
        },
    )
    .expect("valid");
    let b = off.batch(&all, &mut off.log_q_estimator().expect("valid"));
    assert!(b.hard_negatives.is_empty() && b.hard_negatives.log_q().is_empty());
    assert_eq!(b.candidate_pins(), b.pins);
    assert_eq!(off.stats().positives_without_hard_negative, 0);
}

#[test]
fn user_features_ignore_events_at_or_after_the_example() {
    // For each training example, the same log plus engaged impressions of its user at its very
    // second and later, on P2 (seen in training, so the dictionaries do not move): the example's
    // query features, as a batch sees them, must not change.
    let base = tiny_log();
    let cfg = DatasetConfig::default();
    let a = Dataset::build(&base, None, &cfg).expect("valid");
    let mut exact = a.log_q_estimator().expect("valid");
    for (k, e) in a.train().iter().enumerate() {
        let mut more = base.clone();
        let user_id = 1000 + i64::from(e.key.user);
        for (n, after) in [0, 1, 3600, 2 * DAY].into_iter().enumerate() {
            let id = 100 + n as i64;
            let ts = e.key.ts + after;
            more.impressions.push(Impression {
                impression_id: id,
                request_id: id,
                ts,
                user_id,
                pin_id: 102,
                surface: e.key.surface,
                position: Some(1),
                context_pin_id: None,
                query_id: None,
            });
            more.engagements.push(eng(id, ts, EngagementKind::Click));
            more.engagements.push(eng(id, ts, EngagementKind::Save));
        }
        let b = Dataset::build(&more, None, &cfg).expect("valid");
        assert_eq!(a.schema(), b.schema());
        let twin = b
            .train()
            .iter()
            .position(|x| x.key == e.key && x.pin == e.pin)
            .expect("still an example");
        let mut exact_b = b.log_q_estimator().expect("valid");
        assert_eq!(
            a.batch(&[k], &mut exact).query,
            b.batch(&[twin], &mut exact_b).query,
            "features of the example at {} s",
            e.key.ts
        );
        // The added engagements are there for a later query.
        let later = convcg_data::QueryKey {
            ts: e.key.ts + 3 * DAY,
            ..e.key
        };
        assert_ne!(a.query_features(&[later]), b.query_features(&[later]));
    }
}

/// A home-feed query of U0 at `ts`, seeing the seconds before it. U0 clicked P0 at 2d+10 and
/// 3d+10, P3 at 15d+10, P0 at 16d+5.
fn u0_home_feed(ts: i64) -> convcg_data::QueryKey {
    convcg_data::QueryKey {
        user: U0,
        ts,
        seq: i64::MIN,
        surface: Surface::HomeFeed,
        context_pin: None,
        query_id: None,
    }
}

#[test]
fn history_bags_only_hold_engagements_strictly_before_ts() {
    let d = build();
    let cat_row = |p: u32| d.pin_features().sparse[2][p as usize];
    let adv_row = |p: u32| d.pin_features().sparse[1][p as usize];
    let pin_row = |p: u32| d.pin_features().sparse[0][p as usize];
    let key = u0_home_feed;
    let q = d.query_features(&[
        key(2 * DAY + 10),
        key(2 * DAY + 11),
        key(3 * DAY + 11),
        key(13 * DAY),
        key(30 * DAY),
    ]);
    let cats = &q.bags[0];
    assert_eq!(cats.offsets.len(), 6);
    assert!(
        cats.get(0).is_empty(),
        "an engagement at exactly ts is not before it"
    );
    assert_eq!(cats.get(1), &[cat_row(P0)]);
    assert_eq!(cats.get(2), &[cat_row(P0), cat_row(P0)]);
    assert_eq!(
        cats.get(3),
        &[cat_row(P0), cat_row(P0)],
        "eval queries see history as of the window start"
    );
    assert_eq!(
        cats.get(4),
        &[cat_row(P0), cat_row(P0), cat_row(P3), cat_row(P0)]
    );
    assert_eq!(
        q.bags[1].get(4),
        &[adv_row(P0), adv_row(P0), adv_row(P3), adv_row(P0)]
    );
    assert_eq!(
        q.bags[2].get(4),
        &[pin_row(P0), pin_row(P0), pin_row(P3), pin_row(P0)],
        "the recent pins are rows of the pin tower's pin_id table"
    );
    let schema = d.schema();
    let recent = &schema.query_bags[2];
    assert_eq!(recent.name, "recent_pins");
    assert_eq!(recent.pin_table.as_deref(), Some("pin_id"));
    assert_eq!(recent.rows, schema.pin_sparse[0].rows);

    let short = Dataset::build(
        &tiny_log(),
        None,
        &DatasetConfig {
            history_len: 1,
            ..DatasetConfig::default()
        },
    )
    .expect("valid");
    let q = short.query_features(&[key(30 * DAY)]);
    assert_eq!(
        q.bags[0].get(0),
        &[cat_row(P0)],
        "the most recent engagement is kept"
    );
}

/// With `id_code_dim`, every catalogue pin (P3 too, which no training row holds) ends its dense
/// columns with its own unit code, and a query with the mean code of its recent-pins bag.
#[test]
fn identity_codes_end_the_dense_columns() {
    let plain = build();
    let d = Dataset::build(
        &tiny_log(),
        None,
        &DatasetConfig {
            id_code_dim: 16,
            ..DatasetConfig::default()
        },
    )
    .expect("valid");
    let schema = d.schema();
    assert_eq!(schema.id_code_dim, 16);
    assert_eq!(schema.pin_dense, plain.schema().pin_dense + 16);
    assert_eq!(schema.query_dense, plain.schema().query_dense + 16);
    let own = plain.pin_features().dense.ncols();
    let pins = &d.pin_features().dense;
    let code = |p: u32| {
        pins.row(p as usize)
            .iter()
            .skip(own)
            .copied()
            .collect::<Vec<f32>>()
    };
    for p in [P0, P1, P2, P3] {
        let c = code(p);
        assert!(
            c.iter().all(|x| (x.abs() - 0.25).abs() < 1e-6),
            "±1/4: {c:?}"
        );
        assert_eq!(
            pins.row(p as usize).iter().take(own).collect::<Vec<_>>(),
            plain
                .pin_features()
                .dense
                .row(p as usize)
                .iter()
                .collect::<Vec<_>>()
        );
    }
    assert_ne!(code(P0), code(P3));
    let key = u0_home_feed;
    let q = d.query_features(&[key(2 * DAY + 10), key(30 * DAY)]);
    let user = plain.query_features(&[key(30 * DAY)]).dense.ncols();
    let mean = |i: usize| {
        q.dense
            .row(i)
            .iter()
            .skip(user)
            .copied()
            .collect::<Vec<f32>>()
    };
    assert!(mean(0).iter().all(|&x| x == 0.0), "no history, no code");
    let want: Vec<f32> = code(P0)
        .iter()
        .zip(code(P3))
        .map(|(a, b)| (3.0 * a + b) / 4.0)
        .collect();
    for (got, want) in mean(1).iter().zip(&want) {
        assert!((got - want).abs() < 1e-6, "{got} against {want}");
    }
}

#[test]
fn ids_unseen_in_training_map_to_row_zero() {
    let d = build();
    let pins = d.pin_features();
    let [pin_id, adv, cat, brand, price] = [0, 1, 2, 3, 4].map(|f| &pins.sparse[f]);
    // P3 appears only in the eval window; so do its advertiser and category.
    assert_eq!((pin_id[3], adv[3], cat[3]), (0, 0, 0));
    assert!(pin_id[..3].iter().all(|&r| r > 0));
    assert!(adv[..3].iter().all(|&r| r > 0));
    assert_eq!(adv[0], adv[1], "P0 and P1 share an advertiser");
    // The catalogue's advertisers keep their own index, the eval-only one too.
    assert_eq!(d.pin_advertisers(), &[0, 0, 1, 2]);
    assert_eq!(d.num_advertisers(), 3);
    assert_eq!(brand[1], 0, "missing brand");
    assert_eq!(brand[3], 0, "brand seen only in the eval window");
    assert!(brand[0] > 0);
    assert_eq!(price[1], 0, "missing price");
    assert!(price[0] > 0 && price[2] > price[0]);
    assert_eq!(pins.dense.nrows(), 4);
    assert!(pins.dense.column(0).sum().abs() < 1e-5, "standardised");
    let schema = d.schema();
    for (col, spec) in pins.sparse.iter().zip(&schema.pin_sparse) {
        assert!(
            col.iter().all(|&r| (r as usize) < spec.rows),
            "{} within its table",
            spec.name
        );
    }
    assert_eq!(schema.pin_sparse[0].rows, 4, "P0, P1, P2 + OOV");

    let key = |user, surface, context_pin, query_id| convcg_data::QueryKey {
        user,
        ts: 13 * DAY,
        seq: i64::MIN,
        surface,
        context_pin,
        query_id,
    };
    let q = d.query_features(&[
        key(U2, Surface::HomeFeed, None, None),
        key(U0, Surface::Related, Some(P3), None),
        key(U1, Surface::Search, None, Some(77)),
        key(U1, Surface::Search, None, Some(78)),
    ]);
    assert_eq!(q.sparse[0][0], 0, "user unseen in training");
    assert!(q.sparse[0][1] > 0);
    assert_eq!(q.sparse[1], vec![1, 2, 3, 3], "surface rows");
    assert_eq!(q.sparse[2][1], 0, "context pin unseen in training");
    assert_eq!(
        q.sparse[3][2], cat[2],
        "a query's category: that of the pins shown for it in training"
    );
    assert!(q.sparse[4][2] > 0);
    assert_eq!((q.sparse[3][3], q.sparse[4][3]), (0, 0), "unknown query");
    for (col, spec) in q.sparse.iter().zip(&schema.query_sparse) {
        assert!(
            col.iter().all(|&r| (r as usize) < spec.rows),
            "{} within its table",
            spec.name
        );
    }
    assert_eq!(q.dense.shape(), &[4, 1]);
}

#[test]
fn eval_queries_one_per_user_surface_with_first_relevant_context() {
    let d = build();
    let e = d.eval();
    assert_eq!(e.window_end, 20 * DAY);
    assert_eq!(e.window_start, 13 * DAY);

    let eng = &e.engagement;
    assert_eq!(eng.keys.len(), 2);
    assert_eq!(eng.subsampled_from, 2);
    // Pairs in the window: (U0, related), (U1, search), (U2, home feed); U1's has no engagement.
    assert_eq!(eng.skipped_without_relevant, 1);
    let k = eng.keys[0];
    assert_eq!((k.user, k.surface, k.ts), (U0, Surface::Related, 13 * DAY));
    // Impression 8 (context P1) was not engaged; the first relevant is 9, with context P0.
    assert_eq!(k.context_pin, Some(P0));
    assert_eq!(eng.relevant[0], vec![P0, P3]);
    assert_eq!(
        (eng.keys[1].user, eng.keys[1].surface),
        (U2, Surface::HomeFeed)
    );
    assert_eq!(eng.relevant[1], vec![P3]);
    assert!(eng.relevant_clean.is_none());

    let conv = &e.conversion;
    assert_eq!(conv.keys.len(), 1);
    assert_eq!(conv.skipped_without_relevant, 2);
    assert_eq!(
        (
            conv.keys[0].user,
            conv.keys[0].surface,
            conv.keys[0].context_pin
        ),
        (U0, Surface::Related, Some(P0))
    );
    assert_eq!(conv.relevant[0], vec![P3]);
    // The unreported true conversion of P2 followed impression 8 in the window; the one of P0
    // on day 2 is before it.
    assert_eq!(
        conv.relevant_clean
            .as_ref()
            .expect("true conversions given")[0],
        vec![P2, P3]
    );
}

#[test]
fn eval_queries_beyond_the_cap_are_subsampled_and_counted() {
    let cfg = DatasetConfig {
        max_eval_queries: 1,
        eval_seed: 3,
        ..DatasetConfig::default()
    };
    let a = Dataset::build(&tiny_log(), None, &cfg).expect("valid");
    let b = Dataset::build(&tiny_log(), None, &cfg).expect("valid");
    assert_eq!(a.eval().engagement.keys.len(), 1);
    assert_eq!(a.eval().engagement.subsampled_from, 2);
    assert_eq!(a.eval(), b.eval());
}

#[test]
fn bad_logs_and_configs_are_errors() {
    let mut log = tiny_log();
    log.impressions.user_id[0] = 4242;
    let err = Dataset::build(&log, None, &DatasetConfig::default())
        .err()
        .expect("unknown user");
    assert!(err.to_string().contains("user_id"), "{err}");

    let mut log = tiny_log();
    log.pins[1].pin_id = 100;
    assert!(
        Dataset::build(&log, None, &DatasetConfig::default()).is_err(),
        "duplicate pin id"
    );

    let mut log = tiny_log();
    log.impressions.impression_id[1] = log.impressions.impression_id[0];
    assert!(
        Dataset::build(&log, None, &DatasetConfig::default()).is_err(),
        "duplicate impression id"
    );

    let mut log = tiny_log();
    log.users[0].dense.push(1.0);
    assert!(
        Dataset::build(&log, None, &DatasetConfig::default()).is_err(),
        "ragged dense"
    );

    let bad = DatasetConfig {
        eval_window_days: -1.0,
        ..DatasetConfig::default()
    };
    let err = bad.validate().expect_err("negative window");
    assert!(err.to_string().contains("eval_window_days"), "{err}");
    for (text, key) in [
        (
            "hard_negatives_per_positive = 9",
            "hard_negatives_per_positive",
        ),
        (
            "[click_weight]\nreference_s = 0.0",
            "click_weight.reference_s",
        ),
        (
            "[conversion_kind_weights]\nlead = -1.0",
            "conversion_kind_weights.lead",
        ),
        ("[streaming_log_q]\nhashes = 0", "streaming_log_q.hashes"),
        (
            "[streaming_log_q]\nlearning_rate = 1.5",
            "streaming_log_q.learning_rate",
        ),
        ("save_weight = inf", "save_weight"),
    ] {
        let cfg: DatasetConfig = toml::from_str(text).expect(text);
        let err = cfg.validate().expect_err(text);
        assert!(err.to_string().contains(key), "{text}: {err}");
    }
    for text in [
        "log_q = \"sampled\"",
        "value_weighting = \"linear\"",
        "[conversion_kind_weights]\nrefund = 1.0",
        "[click_weight]\nscale = 1.0",
    ] {
        assert!(toml::from_str::<DatasetConfig>(text).is_err(), "{text}");
    }

    assert!(Dataset::build(&EventLog::default(), None, &DatasetConfig::default()).is_err());
}

#[test]
fn config_keys_parse_from_toml() {
    let text = r#"
        hard_negatives_per_positive = 2
        hard_negative_seed = 9
        value_weighting = "log"
        log_q = "streaming"
        save_weight = 0.8
        [click_weight]
        reference_s = 60.0
        [conversion_kind_weights]
        checkout = 0.9
        [streaming_log_q]
        buckets = 4096
    "#;
    let cfg: DatasetConfig = toml::from_str(text).expect("valid");
    cfg.validate().expect("valid");
    let l = cfg.label_config();
    assert_eq!(l.hard_negatives_per_positive, 2);
    assert_eq!(l.seed, 9);
    assert_eq!(l.value_weighting, convcg_data::ValueWeighting::Log);
    assert_eq!(l.click_weight.reference_s, 60.0);
    assert_eq!(l.click_weight.max, 3.0);
    assert_eq!(l.conversion_kind_weights.checkout, 0.9);
    assert_eq!(l.conversion_kind_weights.add_to_cart, 0.4);
    assert_eq!(l.save_weight, 0.8);
    assert_eq!(cfg.log_q, convcg_data::LogQMode::Streaming);
    assert_eq!(cfg.streaming_log_q.buckets, 4096);
    assert_eq!(l.click_window_s, 7 * DAY);
}

#[test]
fn schema_names_round_trip() {
    for (i, s) in Surface::ALL.into_iter().enumerate() {
        assert_eq!(s.index(), i);
        assert_eq!(s.as_str().parse::<Surface>().expect("own name"), s);
        assert_eq!(Surface::from_index(i), Some(s));
    }
    assert_eq!(Surface::HomeFeed.as_str(), "homefeed");
    for k in ConversionKind::ALL {
        assert_eq!(k.as_str().parse::<ConversionKind>().expect("own name"), k);
    }
    assert_eq!(ConversionKind::AddToCart.as_str(), "add_to_cart");
    assert_eq!(
        "save".parse::<EngagementKind>().expect("name"),
        EngagementKind::Save
    );
    let err = "home".parse::<Surface>().expect_err("not a surface");
    assert!(
        err.to_string().contains("homefeed, related, search"),
        "{err}"
    );
    assert!("click ".parse::<EngagementKind>().is_err());
}

/// The query of `user` (an index) after every event of the log.
fn after_the_log(
    user: u32,
    surface: Surface,
    context_pin: Option<u32>,
    query_id: Option<i64>,
) -> convcg_data::QueryKey {
    convcg_data::QueryKey {
        user,
        ts: i64::MAX,
        seq: i64::MAX,
        surface,
        context_pin,
        query_id,
    }
}

fn request(user_id: i64, surface: Surface) -> convcg_data::QueryRequest {
    convcg_data::QueryRequest {
        user_id,
        surface,
        context_pin_id: None,
        query_id: None,
        recent_pin_ids: None,
    }
}

fn coded_config() -> DatasetConfig {
    DatasetConfig {
        id_code_dim: 64,
        history_len: 3,
        ..DatasetConfig::default()
    }
}

#[test]
fn the_feature_state_featurises_requests_as_the_dataset_does_after_the_log() {
    let log = tiny_log();
    let d = Dataset::build(&log, None, &coded_config()).expect("valid");
    let state = d.feature_state(&log);
    let mut keys = Vec::new();
    let mut requests = Vec::new();
    for (u, user) in log.users.iter().enumerate() {
        let u = u as u32;
        keys.push(after_the_log(u, Surface::HomeFeed, None, None));
        requests.push(request(user.user_id, Surface::HomeFeed));
        keys.push(after_the_log(u, Surface::Related, Some(P2), None));
        requests.push(convcg_data::QueryRequest {
            context_pin_id: Some(102),
            ..request(user.user_id, Surface::Related)
        });
        keys.push(after_the_log(u, Surface::Search, None, Some(77)));
        requests.push(convcg_data::QueryRequest {
            query_id: Some(77),
            ..request(user.user_id, Surface::Search)
        });
    }
    let (features, cold) = state.query_features(&requests);
    assert_eq!(features, d.query_features(&keys));
    assert!(cold.iter().all(|c| *c == convcg_data::ColdStart::default()));
    assert_eq!(features.bags[2].get(0).len(), 3, "U0's last 3 engagements");
    assert_eq!(state.pin_features(), d.pin_features());
    assert_eq!(state.schema(), d.schema());

    let text = serde_json::to_string(&state).expect("serialises");
    let back: convcg_data::FeatureState = serde_json::from_str(&text).expect("loads");
    assert_eq!(
        back, state,
        "the stored form rebuilds the codes and the indices"
    );
}

#[test]
fn unknown_ids_are_served_cold_from_out_of_vocabulary_rows() {
    let log = tiny_log();
    let d = Dataset::build(&log, None, &coded_config()).expect("valid");
    let state = d.feature_state(&log);
    let pin_row = |p: u32| d.pin_features().sparse[0][p as usize];
    let (f, cold) = state.query_features(&[
        convcg_data::QueryRequest {
            context_pin_id: Some(555),
            ..request(4242, Surface::Related)
        },
        convcg_data::QueryRequest {
            recent_pin_ids: Some(vec![103, 100, 555, 102, 101]),
            ..request(4242, Surface::HomeFeed)
        },
        convcg_data::QueryRequest {
            recent_pin_ids: Some(Vec::new()),
            ..request(1000, Surface::HomeFeed)
        },
    ]);
    let u0_row = d
        .query_features(&[after_the_log(U0, Surface::HomeFeed, None, None)])
        .sparse[0][0];
    assert_ne!(u0_row, 0);
    assert_eq!(
        f.sparse[0],
        vec![0, 0, u0_row],
        "the new user 4242 gets row 0"
    );
    assert_eq!(
        (f.sparse[2][0], f.sparse[3][0]),
        (0, 0),
        "an unknown context pin is no context"
    );
    assert!(
        f.bags[2].get(0).is_empty(),
        "a new user has no stored engagements"
    );
    assert_eq!(
        f.bags[2].get(1),
        &[pin_row(P0), pin_row(P2), pin_row(P1)],
        "the request's known pins, the last history_len of them"
    );
    assert!(
        f.bags[2].get(2).is_empty(),
        "a request's empty history replaces the stored one"
    );
    assert!(
        f.dense.row(0).iter().all(|&x| x == 0.0),
        "mean user features, no code"
    );
    assert!(
        f.dense.row(1).iter().skip(1).any(|&x| x != 0.0),
        "the code of the given pins"
    );
    assert_eq!(
        cold,
        vec![
            convcg_data::ColdStart {
                user: true,
                context_pin: true,
                unknown_recent_pins: 0
            },
            convcg_data::ColdStart {
                user: true,
                context_pin: false,
                unknown_recent_pins: 1
            },
            convcg_data::ColdStart::default(),
        ]
    );
}

#[test]
fn a_damaged_feature_state_is_refused_naming_what_is_wrong() {
    let log = tiny_log();
    let d = Dataset::build(&log, None, &coded_config()).expect("valid");
    let good = serde_json::to_value(d.feature_state(&log)).expect("serialises");
    let damaged = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut v = good.clone();
        edit(&mut v);
        serde_json::from_value::<convcg_data::FeatureState>(v)
            .expect_err("refused")
            .to_string()
    };
    let e = damaged(&|v| v["user_row"][0] = 99.into());
    assert!(e.contains("user_id row 99 is outside its table"), "{e}");
    let e = damaged(&|v| v["recent_pins"][0] = 4.into());
    assert!(e.contains("recent pin row 4"), "{e}");
    let e = damaged(&|v| {
        v["pin_ids"].as_array_mut().expect("a list").pop();
    });
    assert!(e.contains("has 4 entries, expected 3"), "{e}");
    let e = damaged(&|v| v["pin_ids"][1] = 100.into());
    assert!(e.contains("pin_ids repeats an id"), "{e}");
    let e = damaged(&|v| v["recent_offsets"][1] = 100.into());
    assert!(e.contains("bags are malformed"), "{e}");
}

/// An eval window that covers the whole log leaves nothing to train on: an error that says so
/// and names the key, not a run that fails later for want of batches.
#[test]
fn an_eval_window_over_the_whole_log_is_an_error_naming_the_key() {
    let cfg = DatasetConfig {
        eval_window_days: 365.0,
        ..DatasetConfig::default()
    };
    let err = Dataset::build(&tiny_log(), None, &cfg)
        .err()
        .expect("no training data");
    let text = err.to_string();
    assert!(text.contains("leaves no training data"), "{text}");
    assert!(text.contains("eval_window_days"), "{text}");
    assert!(text.contains("365"), "{text}");
}

/// A maturity window as long as the log masks every conversion label: a warning that names the
/// key, where the default window gives none.
#[test]
fn a_maturity_window_as_long_as_the_log_warns_and_names_the_key() {
    let cfg = DatasetConfig {
        click_window_days: 365.0,
        ..DatasetConfig::default()
    };
    let masked = Dataset::build(&tiny_log(), None, &cfg).expect("valid");
    let stats = masked.stats();
    assert_eq!(stats.masked_conversion_labels, stats.train_positives);
    let warning = stats.masking_warning().expect("a warning");
    assert!(warning.contains("click_window_days"), "{warning}");
    assert_eq!(build().stats().masking_warning(), None);
}
