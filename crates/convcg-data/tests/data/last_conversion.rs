//! The `last_conversion` protocol on a hand-made log of one second (as tmall's whole-day
//! timestamps are), where only file order says what came first: each query's event and the
//! user's later events never reach training examples, labels, hard negatives or history.

use convcg_data::{
    Conversion, Dataset, DatasetConfig, Engagement, EngagementKind, EvalProtocol, EventLog,
    Impression, PinRecord, QueryKey, Surface, UserRecord,
};

use crate::events::{engagement, impression, purchase};

const T: i64 = 1_500_000_000;

fn imp(id: i64, user_id: i64, pin_id: i64) -> Impression {
    impression(id, id, T, user_id, pin_id, Surface::HomeFeed)
}

fn click(impression_id: i64) -> Engagement {
    engagement(impression_id, T, EngagementKind::Click)
}

fn buy(user_id: i64, pin_id: i64) -> Conversion {
    purchase(T, user_id, pin_id)
}

/// Pins 100..=105 (catalog rows 0..=5, category = pin - 90). User 1000 (row 0), in file order:
/// clicks 100, 101; buys 102 (its own impression 3); clicks 103; buys 104 (impression 5, the
/// last buy); clicks 105 (the last click). User 1001 (row 1): clicks 100, 103, 101.
fn log() -> EventLog {
    EventLog {
        pins: (100..=105)
            .map(|p| PinRecord {
                pin_id: p,
                advertiser_id: 1,
                category_id: p - 90,
                brand_id: None,
                price: None,
                dense: Vec::new(),
            })
            .collect(),
        users: [1000, 1001]
            .map(|user_id| UserRecord {
                user_id,
                categorical: Vec::new(),
                dense: Vec::new(),
            })
            .to_vec(),
        impressions: [
            imp(1, 1000, 100),
            imp(2, 1000, 101),
            imp(3, 1000, 102),
            imp(4, 1000, 103),
            imp(5, 1000, 104),
            imp(6, 1000, 105),
            imp(7, 1001, 100),
            imp(8, 1001, 103),
            imp(9, 1001, 101),
        ]
        .into_iter()
        .collect(),
        engagements: [1, 2, 4, 6, 7, 8, 9].map(click).to_vec(),
        conversions: vec![buy(1000, 102), buy(1000, 104)],
        pin_dense_names: Vec::new(),
        user_dense_names: Vec::new(),
        user_categorical_names: Vec::new(),
    }
}

fn config() -> DatasetConfig {
    DatasetConfig {
        eval_protocol: EvalProtocol::LastConversion,
        click_window_days: 0.0,
        view_window_days: 0.0,
        history_len: 50,
        ..DatasetConfig::default()
    }
}

/// Category rows of a query's history bag.
fn history(d: &Dataset, key: &QueryKey) -> Vec<u32> {
    d.query_features(&[*key]).bags[0].ids.clone()
}

#[test]
fn queries_are_each_users_last_buy_and_last_click_in_file_order() {
    let d = Dataset::build(&log(), None, &config()).unwrap();
    let eval = d.eval();
    assert_eq!(eval.conversion.keys.len(), 1);
    let buy = eval.conversion.keys[0];
    assert_eq!((buy.user, buy.ts, buy.seq), (0, T, 5), "at impression 5");
    assert_eq!(eval.conversion.relevant, vec![vec![4]], "pin 104");
    let clicks = &eval.engagement;
    assert_eq!(
        clicks
            .keys
            .iter()
            .map(|k| (k.user, k.seq))
            .collect::<Vec<_>>(),
        vec![(0, 6), (1, 9)]
    );
    assert_eq!(clicks.relevant, vec![vec![5], vec![1]]);
    assert_eq!(d.stats().held_out_conversions, 1);
    assert_eq!(d.stats().eval_conversion_queries, 1);

    // The buy query sees the clicks before it in file order (100, 101, 103), oldest first.
    let cat = |p: u32| d.pin_features().sparse[2][p as usize];
    assert_eq!(history(&d, &buy), vec![cat(0), cat(1), cat(3)]);
    assert_eq!(history(&d, &clicks.keys[0]), vec![cat(0), cat(1), cat(3)]);
    assert_eq!(history(&d, &clicks.keys[1]), vec![cat(0), cat(3)]);
    // Recently seen: impressions before the buy, latest first (the earlier buy's 102 included).
    assert_eq!(d.recently_seen(&buy, 10), vec![3, 2, 1, 0]);
    assert_eq!(d.recently_seen(&buy, 2), vec![3, 2]);
}

#[test]
fn held_out_events_never_reach_training_labels_or_history() {
    let d = Dataset::build(&log(), None, &config()).unwrap();
    // User 0 trains on impressions 1..=4 (the earlier buy is a conversion positive), user 1 on
    // 7 and 8: nothing at or after a user's first query.
    let mut trained: Vec<(u32, u32, i64, i8)> = d
        .train()
        .iter()
        .map(|e| (e.key.user, e.pin, e.key.seq, e.label_conversion))
        .collect();
    trained.sort_unstable();
    assert_eq!(
        trained,
        vec![
            (0, 0, 1, 0),
            (0, 1, 2, 0),
            (0, 2, 3, 1),
            (0, 3, 4, 0),
            (1, 0, 7, 0),
            (1, 3, 8, 0)
        ]
    );
    assert!(d.train().iter().all(|e| {
        e.hard_negatives
            .as_slice()
            .iter()
            .all(|&p| p != 4 && p != 5)
    }));
    // Pins 104 and 105 appear only in held-out events: out of vocabulary.
    assert_eq!(d.stats().pin_vocab, 4);
    assert_eq!(d.pin_features().sparse[0][4], 0);
    assert_eq!(d.pin_features().sparse[0][5], 0);

    // Held-out events made different (where leakage would show: user 0's last buy and last
    // click swap pins, user 1's last click moves to pin 102) change neither the training
    // examples, nor their features, nor the queries' features; only what the queries ask for.
    let mut other = log();
    for (row, pin) in [(4, 105), (5, 104), (8, 102)] {
        other.impressions.pin_id[row] = pin;
    }
    other.conversions[1].pin_id = 105;
    let e = Dataset::build(&other, None, &config()).unwrap();
    assert_eq!(d.train(), e.train());
    let all: Vec<usize> = (0..d.train().len()).collect();
    assert_eq!(
        d.batch(&all, &mut d.log_q_estimator().unwrap()).query,
        e.batch(&all, &mut e.log_q_estimator().unwrap()).query
    );
    for (a, b) in [
        (&d.eval().conversion, &e.eval().conversion),
        (&d.eval().engagement, &e.eval().engagement),
    ] {
        assert_eq!(a.keys, b.keys);
        assert_eq!(d.query_features(&a.keys), e.query_features(&b.keys));
        assert_ne!(a.relevant, b.relevant);
    }
}
