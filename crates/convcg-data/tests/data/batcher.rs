//! The batcher: seeded, full batches, reshuffled per epoch.

use convcg_data::Batcher;

fn batches(seed: u64, n: usize, size: usize, count: usize) -> Vec<Vec<usize>> {
    let mut b = Batcher::new(n, size, seed).expect("valid");
    (0..count).map(|_| b.next_batch().to_vec()).collect()
}

#[test]
fn deterministic_full_batches_reshuffled_per_epoch() {
    let (n, size) = (103, 10);
    let a = batches(5, n, size, 35);
    assert_eq!(a, batches(5, n, size, 35));
    assert_ne!(a, batches(6, n, size, 35));
    assert!(a.iter().all(|b| b.len() == size));
    let mut b = Batcher::new(n, size, 5).expect("valid");
    assert_eq!(b.batches_per_epoch(), 10);
    for epoch in 0..3 {
        let mut seen: Vec<usize> = Vec::new();
        for _ in 0..10 {
            seen.extend_from_slice(b.next_batch());
            assert_eq!(b.epoch(), epoch);
        }
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 100, "no index twice in an epoch");
        assert!(seen.iter().all(|&i| i < n));
    }
    assert_ne!(a[0..10], a[10..20], "each epoch has its own order");
}

#[test]
fn batch_size_must_fit() {
    assert!(Batcher::new(10, 0, 0).is_err());
    assert!(Batcher::new(10, 11, 0).is_err());
    let mut b = Batcher::new(10, 10, 0).expect("valid");
    assert_eq!(b.next_batch().len(), 10);
    assert_eq!(b.next_batch().len(), 10);
    assert_eq!(b.epoch(), 1);
}

/// A batcher rebuilt from its state mid-epoch hands out exactly the batches the original would,
/// across reshuffles; a state for other data is refused.
#[test]
fn a_batcher_restored_from_its_state_continues_identically() {
    let (n, size) = (23, 4);
    let mut a = Batcher::new(n, size, 9).expect("valid");
    for _ in 0..7 {
        a.next_batch();
    }
    let state = a.state();
    let mut b = Batcher::from_state(n, size, state.clone()).expect("fits");
    for _ in 0..20 {
        assert_eq!(a.next_batch(), b.next_batch());
        assert_eq!(a.epoch(), b.epoch());
    }
    assert!(Batcher::from_state(n + 1, size, state.clone()).is_err());
    assert!(Batcher::from_state(n, size + 1, state.clone()).is_err());
    let mut repeated = state.clone();
    repeated.order[0] = repeated.order[1];
    assert!(Batcher::from_state(n, size, repeated).is_err());
    let mut past = state;
    past.pos = n + 1;
    assert!(Batcher::from_state(n, size, past).is_err());
}
