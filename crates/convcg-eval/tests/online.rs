//! Simulated serving against hand-computed outcomes: ties in `p_click x bid`, a query whose
//! candidates all miss the reserve, one with fewer eligible candidates than slots, one with more.

use std::collections::HashMap;

use convcg_eval::{
    AuctionConfig, CandidateTruth, Error, OnlineLift, ServingOutcome, TopK, lift_percent,
    serve_query, simulate_serving,
};

fn assert_near(got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1e-3),
        "{got} != {want}"
    );
}

/// (p_click, p_conversion_given_click, p_view_through, value, bid)
type Truth = (f64, f64, f64, f64, f64);

fn truth(t: Truth) -> CandidateTruth {
    CandidateTruth {
        p_click: t.0,
        p_conversion_given_click: t.1,
        p_view_through: t.2,
        value: t.3,
        bid: t.4,
        target_cpa: None,
    }
}

/// Five slots examined with probability 1, 1/2, 1/3, 1/4, 1/5; a reserve of 0.01.
fn cfg(candidates: usize) -> AuctionConfig {
    AuctionConfig {
        candidates,
        slots: 5,
        reserve: 0.01,
        position_decay: 1.0,
        traffic_requests: 0,
    }
}

/// Three queries of seven candidates each, and every candidate's truth.
fn three_queries() -> (TopK, HashMap<(usize, u32), CandidateTruth>) {
    let rows: [[(u32, Truth); 7]; 3] = [
        // Query 0: six clear the reserve; 10, 11, 15 and 16 tie at 0.02 (by id: 10, 11, 15 are
        // shown, 16 is the sixth and left out); 13 (0.005) misses the reserve.
        [
            (16, (0.02, 0.9, 0.0, 90.0, 1.0)),
            (10, (0.02, 0.1, 0.001, 50.0, 1.0)),
            (11, (0.04, 0.05, 0.0, 20.0, 0.5)),
            (12, (0.05, 0.2, 0.002, 10.0, 1.0)),
            (13, (0.01, 0.5, 0.0, 100.0, 0.5)),
            (14, (0.03, 0.1, 0.0, 40.0, 2.0)),
            (15, (0.01, 0.3, 0.0, 30.0, 2.0)),
        ],
        // Query 1: nobody reaches the reserve (0.009 at best): no ad.
        [
            (20, (0.009, 0.5, 0.01, 10.0, 1.0)),
            (21, (0.001, 0.5, 0.01, 10.0, 1.0)),
            (22, (0.002, 0.5, 0.01, 10.0, 1.0)),
            (23, (0.003, 0.5, 0.01, 10.0, 1.0)),
            (24, (0.004, 0.5, 0.01, 10.0, 1.0)),
            (25, (0.005, 0.5, 0.01, 10.0, 1.5)),
            (26, (0.006, 0.5, 0.01, 10.0, 1.0)),
        ],
        // Query 2: two clear it, 30 exactly at the reserve (shown: the reserve is inclusive).
        [
            (30, (0.02, 0.1, 0.0, 25.0, 0.5)),
            (31, (0.08, 0.05, 0.0, 15.0, 0.25)),
            (32, (0.001, 0.5, 0.0, 10.0, 1.0)),
            (33, (0.001, 0.5, 0.0, 10.0, 1.0)),
            (34, (0.001, 0.5, 0.0, 10.0, 1.0)),
            (35, (0.001, 0.5, 0.0, 10.0, 1.0)),
            (36, (0.001, 0.5, 0.0, 10.0, 1.0)),
        ],
    ];
    let mut map = HashMap::new();
    let mut ids = Vec::new();
    for (q, row) in rows.iter().enumerate() {
        for &(id, t) in row {
            ids.push(id);
            map.insert((q, id), truth(t));
        }
    }
    let scores = vec![0.0; ids.len()];
    let top = TopK::new(7, ids, scores).unwrap();
    (top, map)
}

#[test]
fn every_number_of_a_hand_computed_case() {
    let (top, map) = three_queries();
    let out = simulate_serving(&top, &cfg(7), |q, id| map[&(q, id)]).unwrap();
    // Query 0 shows 14 (0.06), 12 (0.05), then the ties 10, 11, 15 in slots 0..5.
    // Conversions per examined impression: 14: 0.03 * 0.1 = 0.003;
    // 12: 0.05 * 0.2 + 0.95 * 0.002 = 0.0119; 10: 0.02 * 0.1 + 0.98 * 0.001 = 0.00298;
    // 11: 0.04 * 0.05 = 0.002; 15: 0.01 * 0.3 = 0.003.
    let imp0 = 1.0 + 1.0 / 2.0 + 1.0 / 3.0 + 1.0 / 4.0 + 1.0 / 5.0;
    let clicks0 = 0.03 + 0.05 / 2.0 + 0.02 / 3.0 + 0.04 / 4.0 + 0.01 / 5.0;
    let conv0 = 0.003 + 0.0119 / 2.0 + 0.00298 / 3.0 + 0.002 / 4.0 + 0.003 / 5.0;
    let value0 = 0.003 * 40.0
        + 0.0119 / 2.0 * 10.0
        + 0.00298 / 3.0 * 50.0
        + 0.002 / 4.0 * 20.0
        + 0.003 / 5.0 * 30.0;
    let cost0 =
        0.03 * 2.0 + 0.05 / 2.0 * 1.0 + 0.02 / 3.0 * 1.0 + 0.04 / 4.0 * 0.5 + 0.01 / 5.0 * 2.0;
    // Query 2 shows 31 (0.02) then 30 (0.01, at the reserve).
    let imp2 = 1.5;
    let clicks2 = 0.08 + 0.02 / 2.0;
    let conv2 = 0.08 * 0.05 + 0.02 * 0.1 / 2.0;
    let value2 = 0.004 * 15.0 + 0.001 * 25.0;
    let cost2 = 0.08 * 0.25 + 0.01 * 0.5;

    assert_eq!(out.queries, 3);
    assert_eq!(out.queries_with_ads, 2);
    assert_eq!(out.ads_shown, 5 + 2);
    assert_near(out.impressions, imp0 + imp2);
    assert_near(out.clicks, clicks0 + clicks2);
    assert_near(out.conversions, conv0 + conv2);
    assert_near(out.value, value0 + value2);
    assert_near(out.cost, cost0 + cost2);
    assert_near(
        out.conversion_volume().unwrap(),
        1000.0 * (conv0 + conv2) / 3.0,
    );
    assert_near(
        out.impression_to_conversion().unwrap(),
        (conv0 + conv2) / (imp0 + imp2),
    );
    assert_near(out.roas().unwrap(), (value0 + value2) / (cost0 + cost2));

    // Query by query: the slots and their examination.
    let row = |q: usize| -> Vec<(u32, CandidateTruth)> {
        top.row(q).iter().map(|&id| (id, map[&(q, id)])).collect()
    };
    let (shown, _) = serve_query(0, &row(0), &cfg(7)).unwrap();
    let order: Vec<u32> = shown.iter().map(|s| s.0).collect();
    assert_eq!(order, [14, 12, 10, 11, 15]);
    assert_eq!(shown[2].1, 1.0 / 3.0);
    let (shown, q1) = serve_query(1, &row(1), &cfg(7)).unwrap();
    assert!(shown.is_empty());
    assert_eq!(
        q1,
        ServingOutcome {
            queries: 1,
            ..ServingOutcome::default()
        }
    );
    assert_eq!(q1.impression_to_conversion(), None);
    assert_eq!(q1.roas(), None);
    assert_eq!(q1.conversion_volume(), Some(0.0));
    let (shown, _) = serve_query(2, &row(2), &cfg(7)).unwrap();
    assert_eq!(shown, [(31, 1.0), (30, 0.5)]);
}

#[test]
fn only_the_first_candidates_of_each_list_enter() {
    let (top, map) = three_queries();
    // The first three of query 0 are 16, 10, 11 (all at 0.02): shown by id as 10, 11, 16.
    let out = simulate_serving(&top, &cfg(3), |q, id| map[&(q, id)]).unwrap();
    let conv0 = 0.00298 + 0.002 / 2.0 + 0.02 * 0.9 / 3.0;
    // Query 2's first three hold 30 and 31, as before.
    let conv2 = 0.08 * 0.05 + 0.02 * 0.1 / 2.0;
    assert_near(out.conversions, conv0 + conv2);
    assert_eq!(out.ads_shown, 3 + 2);
    assert!(matches!(
        simulate_serving(&top, &cfg(8), |q, id| map[&(q, id)]),
        Err(Error::CutoffExceedsK { cutoff: 8, k: 7 })
    ));
}

/// A second ad that clears the reserve adds conversions and value but is examined less and
/// converts less per impression: the three lifts come out different.
#[test]
fn the_three_lifts_are_not_forced_equal() {
    let base = TopK::new(2, vec![1, 3], vec![0.0; 2]).unwrap();
    let better = TopK::new(2, vec![1, 2], vec![0.0; 2]).unwrap();
    let truth_of = |_: usize, id: u32| match id {
        1 => truth((0.05, 0.1, 0.0, 20.0, 1.0)),
        2 => truth((0.02, 0.2, 0.0, 10.0, 1.0)),
        // Below the reserve: never shown.
        _ => truth((0.001, 0.9, 0.0, 500.0, 1.0)),
    };
    let a = simulate_serving(&base, &cfg(2), truth_of).unwrap();
    let b = simulate_serving(&better, &cfg(2), truth_of).unwrap();
    // a: one ad, 0.005 conversions, value 0.1, cost 0.05 over 1 impression.
    // b: adds 0.004 / 2 conversions, value 0.02, cost 0.01 over 0.5 impressions.
    let lift = OnlineLift::between(&a, &b);
    assert_near(
        lift.conversion_volume.unwrap(),
        100.0 * (0.007 / 0.005 - 1.0),
    );
    assert_near(
        lift.impression_to_conversion.unwrap(),
        100.0 * ((0.007 / 1.5) / 0.005 - 1.0),
    );
    assert_near(lift.roas.unwrap(), 100.0 * ((0.12 / 0.06) / 2.0 - 1.0));
    assert!(lift.conversion_volume.unwrap() > 39.0);
    assert!(lift.impression_to_conversion.unwrap() < -6.0);
    assert!(lift.roas.unwrap().abs() < 1e-9);
    assert_eq!(
        lift.paper_style(),
        "+40.0% conversion volume, -6.7% impression-to-conversion, +0.0% RoAS"
    );
}

#[test]
fn undefined_lifts_are_none() {
    assert_eq!(lift_percent(Some(0.0), Some(1.0)), None);
    assert_eq!(lift_percent(None, Some(1.0)), None);
    assert_eq!(lift_percent(Some(2.0), None), None);
    assert_eq!(lift_percent(Some(2.0), Some(3.0)), Some(50.0));
    let empty = ServingOutcome::default();
    let lift = OnlineLift::between(&empty, &empty);
    assert_eq!(lift, OnlineLift::default());
    assert_eq!(
        lift.paper_style(),
        "n/a conversion volume, n/a impression-to-conversion, n/a RoAS"
    );
}
