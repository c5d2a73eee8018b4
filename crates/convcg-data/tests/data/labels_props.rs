//! Properties of the training-data rules on random small logs, checked against a direct,
//! quadratic reading of the rules.

use std::collections::BTreeMap;

use convcg_data::testing::NONE;
use convcg_data::{
    Conversion, ConversionKind, Engagement, EngagementKind, EventLog, Impression, LabelConfig,
    Labelled, Surface, Touch, engagement_impressions, label,
};
use proptest::prelude::*;

const D: i64 = 86_400;
const CLICK_W: i64 = 7 * D;
const VIEW_W: i64 = D;

#[derive(Clone, Debug)]
struct Case {
    log: EventLog,
    cutoff: i64,
    scope: Option<Vec<bool>>,
    h: usize,
    seed: u64,
}

/// Times on a coarse grid (quarter days up to `quarters`, plus 0, 1 or 50 s), so that equal
/// times and window edges (1 d, 7 d) occur often.
fn time(quarters: i64) -> impl Strategy<Value = i64> {
    (0..quarters, prop::sample::select(vec![0i64, 1, 50])).prop_map(|(q, s)| q * D / 4 + s)
}

fn case() -> impl Strategy<Value = Case> {
    let imp = (0i64..8, time(28), 1i64..4, 1i64..5, 0usize..3);
    let eng = (
        0usize..64,
        prop::sample::select(vec![0i64, 1, 50, D / 4, D]),
        any::<bool>(),
        prop::option::of(-5.0f32..100.0),
    );
    let conv = (time(48), 1i64..5, 1i64..6);
    (
        prop::collection::vec(imp, 1..40),
        prop::collection::vec(eng, 0..30),
        prop::collection::vec(conv, 0..15),
        time(64),
        prop::option::of(prop::collection::vec(any::<bool>(), 40)),
        0usize..4,
        any::<u64>(),
    )
        .prop_map(|(imps, engs, convs, cutoff, scope, h, seed)| {
            let n = imps.len();
            let impressions = imps
                .iter()
                .enumerate()
                .map(|(k, &(request, ts, user, pin, s))| Impression {
                    impression_id: 2 * k as i64 + 1,
                    request_id: request,
                    ts,
                    user_id: user,
                    pin_id: pin,
                    surface: Surface::ALL[s],
                    position: None,
                    context_pin_id: None,
                    query_id: None,
                })
                .collect::<Vec<_>>();
            let engagements = engs
                .iter()
                .map(|&(k, after, is_click, duration_s)| Engagement {
                    // Indices past the impressions make orphans.
                    impression_id: 2 * k as i64 + 1,
                    ts: impressions.get(k).map_or(0, |i| i.ts) + after,
                    kind: if is_click {
                        EngagementKind::Click
                    } else {
                        EngagementKind::Save
                    },
                    duration_s,
                })
                .collect();
            let conversions = convs
                .iter()
                .map(|&(ts, user_id, pin_id)| Conversion {
                    ts,
                    user_id,
                    pin_id,
                    kind: ConversionKind::Purchase,
                    value: None,
                })
                .collect();
            Case {
                log: EventLog {
                    impressions: impressions.into_iter().collect(),
                    engagements,
                    conversions,
                    ..EventLog::default()
                },
                cutoff,
                scope: scope.map(|s| s[..n].to_vec()),
                h,
                seed,
            }
        })
}

fn run(c: &Case, log: &EventLog, scope: Option<&[bool]>) -> Labelled {
    let eng = engagement_impressions(log).expect("unique ids");
    let cfg = LabelConfig {
        hard_negatives_per_positive: c.h,
        seed: c.seed,
        ..LabelConfig::default()
    };
    label(log, &eng, &cfg, c.cutoff, scope).expect("valid")
}

/// The rules read directly: per conversion, (impression row, touch) or none.
fn naive_attribution(log: &EventLog) -> Vec<Option<(usize, Touch)>> {
    let imps = &log.impressions;
    let row_of = |id: i64| imps.impression_id.iter().position(|&x| x == id);
    log.conversions
        .iter()
        .map(|c| {
            let same = |i: usize| imps.user_id[i] == c.user_id && imps.pin_id[i] == c.pin_id;
            let click = log
                .engagements
                .iter()
                .filter(|e| e.kind == EngagementKind::Click)
                .filter_map(|e| Some((e.ts, row_of(e.impression_id)?)))
                .filter(|&(t, i)| same(i) && t <= c.ts && c.ts <= t + CLICK_W)
                .max_by_key(|&(t, i)| (t, imps.impression_id[i]));
            if let Some((_, i)) = click {
                return Some((i, Touch::Click));
            }
            (0..imps.len())
                .filter(|&i| same(i) && imps.ts[i] <= c.ts && c.ts <= imps.ts[i] + VIEW_W)
                .max_by_key(|&i| (imps.ts[i], imps.impression_id[i]))
                .map(|i| (i, Touch::View))
        })
        .collect()
}

struct Truth {
    engaged: Vec<bool>,
    converted: Vec<bool>,
    mature: Vec<bool>,
    in_scope: Vec<bool>,
}

impl Truth {
    fn new(c: &Case, log: &EventLog, scope: Option<&[bool]>) -> Truth {
        let imps = &log.impressions;
        let n = imps.len();
        let mut engaged = vec![false; n];
        for e in &log.engagements {
            if let Some(i) = imps
                .impression_id
                .iter()
                .position(|&x| x == e.impression_id)
            {
                engaged[i] = true;
            }
        }
        let mut converted = vec![false; n];
        for (i, _) in naive_attribution(log).into_iter().flatten() {
            converted[i] = true;
        }
        Truth {
            engaged,
            converted,
            mature: imps.ts.iter().map(|&t| t + CLICK_W <= c.cutoff).collect(),
            in_scope: (0..n).map(|i| scope.is_none_or(|s| s[i])).collect(),
        }
    }

    fn positive(&self, i: usize) -> bool {
        self.in_scope[i] && (self.engaged[i] || (self.converted[i] && self.mature[i]))
    }

    fn candidate(&self, i: usize) -> bool {
        self.in_scope[i] && !self.engaged[i] && !self.converted[i]
    }
}

fn check(c: &Case, log: &EventLog, scope: Option<&[bool]>) -> Result<Labelled, TestCaseError> {
    let l = run(c, log, scope);
    let imps = &log.impressions;
    let n = imps.len();

    // Attribution: exactly the direct reading; so a conversion outside every window is
    // never attributed, and each is credited to one impression at most.
    let naive = naive_attribution(log);
    prop_assert_eq!(l.attribution.impression.len(), log.conversions.len());
    for (k, want) in naive.iter().enumerate() {
        prop_assert_eq!(l.attribution.get(k).map(|(i, t)| (i as usize, t)), *want);
    }
    prop_assert_eq!(
        l.stats.attributed() + l.stats.unattributed,
        log.conversions.len()
    );

    // Positives and labels: a conversion label is 0 or 1 only for a mature impression.
    let t = Truth::new(c, log, scope);
    let want: Vec<u32> = (0..n)
        .filter(|&i| t.positive(i))
        .map(|i| i as u32)
        .collect();
    prop_assert_eq!(&l.impression, &want);
    for (k, &i) in l.impression.iter().enumerate() {
        let i = i as usize;
        let lc = l.label_conversion[k];
        prop_assert_eq!(lc == -1, !t.mature[i]);
        if lc >= 0 {
            prop_assert_eq!(lc == 1, t.converted[i]);
        }
        prop_assert_eq!(l.label_engagement[k] == 1, t.engaged[i]);
        let want_wc = if lc == 1 { 1.0 } else { 0.0 };
        prop_assert_eq!(l.weight_conversion[k], want_wc);
    }

    // Hard negatives: unengaged, unconverted, in scope, not the row's own impression, distinct,
    // from the same request, or (only when the request has no candidate) the same user and day.
    let h = c.h;
    prop_assert_eq!(l.hard_negative.len(), l.len() * h);
    for (k, &p) in l.impression.iter().enumerate() {
        let p = p as usize;
        let same_request: Vec<usize> = (0..n)
            .filter(|&j| t.candidate(j) && imps.request_id[j] == imps.request_id[p])
            .collect();
        let same_day: Vec<usize> = (0..n)
            .filter(|&j| {
                t.candidate(j)
                    && imps.user_id[j] == imps.user_id[p]
                    && imps.ts[j].div_euclid(D) == imps.ts[p].div_euclid(D)
            })
            .collect();
        let pool = if same_request.is_empty() {
            &same_day
        } else {
            &same_request
        };
        let drawn = l.hard_negatives(k);
        prop_assert_eq!(drawn.len(), h.min(pool.len()));
        prop_assert!(
            l.hard_negative[k * h + drawn.len()..(k + 1) * h]
                .iter()
                .all(|&x| x == NONE)
        );
        let mut seen = drawn.to_vec();
        seen.sort_unstable();
        seen.dedup();
        prop_assert_eq!(seen.len(), drawn.len());
        for &j in drawn {
            let j = j as usize;
            prop_assert!(j != p && t.candidate(j));
            prop_assert!(pool.contains(&j));
        }
    }

    // log q: the pin's share among positives; a hard negative's among the drawn ones.
    let count = |pins: &[i64], pin: i64| pins.iter().filter(|&&x| x == pin).count() as f64;
    let pos_pins: Vec<i64> = l
        .impression
        .iter()
        .map(|&i| imps.pin_id[i as usize])
        .collect();
    for (k, &pin) in pos_pins.iter().enumerate() {
        let want = (count(&pos_pins, pin) / pos_pins.len() as f64).ln() as f32;
        prop_assert!((l.log_q[k] - want).abs() < 1e-6);
    }
    let hn_pins: Vec<i64> = l
        .hard_negative
        .iter()
        .filter(|&&i| i != NONE)
        .map(|&i| imps.pin_id[i as usize])
        .collect();
    for (slot, &i) in l.hard_negative.iter().enumerate() {
        let want = if i == NONE {
            0.0
        } else {
            let pin = imps.pin_id[i as usize];
            (count(&hn_pins, pin) / hn_pins.len() as f64).ln() as f32
        };
        prop_assert!((l.hard_negative_log_q[slot] - want).abs() < 1e-6);
    }
    Ok(l)
}

/// Positives keyed by impression id, with their hard negatives' ids.
fn by_id(log: &EventLog, l: &Labelled) -> BTreeMap<i64, (i8, u8, Vec<i64>)> {
    (0..l.len())
        .map(|k| {
            let id = |i: u32| log.impressions.impression_id[i as usize];
            let hn = l.hard_negatives(k).iter().map(|&i| id(i)).collect();
            (
                id(l.impression[k]),
                (l.label_conversion[k], l.label_engagement[k], hn),
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rules_hold_on_random_logs(c in case()) {
        let scope = c.scope.as_deref();
        let a = check(&c, &c.log, scope)?;

        // Rows sorted by request id group each request into one run (the other index path);
        // the result, keyed by ids, is the same.
        let n = c.log.impressions.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| c.log.impressions.request_id[i]);
        let mut sorted = c.log.clone();
        sorted.impressions = order.iter().map(|&i| c.log.impressions.get(i)).collect();
        let sorted_scope: Option<Vec<bool>> = scope.map(|s| order.iter().map(|&i| s[i]).collect());
        let b = check(&c, &sorted, sorted_scope.as_deref())?;
        prop_assert_eq!(by_id(&c.log, &a), by_id(&sorted, &b));
        prop_assert_eq!(a.stats, b.stats);
    }
}
