//! Data-parallel steps: N ranks, each with its rows of a global batch and its share of the
//! extra candidates, train the model one process trains on the whole batch, up to the order in
//! which floats are summed.

use convcg_model::collective::{run_ranks, share};
use convcg_model::{
    Heads, ModelConfig, OptimConfig, Optimizer, Par, Shard, Structure, Tape, TwoTowerModel,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod support;
use support::{OwnedBatch, advertisers_of, tables, tiny_batch, tiny_config};

const ROWS: usize = 8;
const EXTRAS: usize = 5;
const STEPS: usize = 4;

/// Global batches: `ROWS` rows with their positives, then `EXTRAS` extra candidates, one of
/// them absent (log q = +inf) as an empty hard-negative slot is.
fn batches() -> Vec<OwnedBatch> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    (0..STEPS)
        .map(|_| {
            let mut b = tiny_batch(&mut rng, ROWS);
            for k in 0..EXTRAS {
                b.p_sparse[0].push(rng.random_range(0..4));
                b.p_sparse[1].push(rng.random_range(0..3));
                b.p_dense
                    .extend((0..2).map(|_| rng.random_range(-1.0f32..1.0)));
                // Ids 2.. overlap the positives' 0..4: accidental hits across ranks.
                b.pin_ids.push(2 + k as u32);
                b.log_q.push(if k == 3 { f32::INFINITY } else { -2.5 });
            }
            b.advertisers = Some(advertisers_of(&b.pin_ids));
            b
        })
        .collect()
}

fn config(heads: Heads) -> ModelConfig {
    ModelConfig {
        heads,
        advertiser_loss_weight: 0.5,
        ..tiny_config(Structure::Parallel)
    }
}

/// Every parameter's values, dense then tables.
fn values(model: &TwoTowerModel) -> Vec<f32> {
    model.params().values().collect()
}

/// The losses and final parameters of STEPS steps in one process.
fn one_process(cfg: &ModelConfig) -> (Vec<f32>, Vec<f32>) {
    let (qt, pt) = (tables("f", &[5], &[4], 3), tables("f", &[4, 3], &[], 2));
    let mut model = TwoTowerModel::new(cfg, &qt, &pt, 11).unwrap();
    let mut opt = Optimizer::new(&OptimConfig::default(), model.params()).unwrap();
    let mut grads = model.params().zero_grads();
    let mut tape = Tape::new(Par::Seq);
    let losses = batches()
        .iter()
        .map(|b| {
            model
                .train_step_with(&mut tape, &b.batch(), &mut grads, &mut opt, Par::Seq)
                .unwrap()
        })
        .collect();
    (losses, values(&model))
}

/// The same steps on `n` ranks: each rank's losses and final parameters.
fn ranks(cfg: &ModelConfig, n: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    run_ranks(n, |comm| {
        let (qt, pt) = (tables("f", &[5], &[4], 3), tables("f", &[4, 3], &[], 2));
        let mut model = TwoTowerModel::new(cfg, &qt, &pt, 11).unwrap();
        let mut opt = Optimizer::new(&OptimConfig::default(), model.params()).unwrap();
        let mut grads = model.params().zero_grads();
        let mut tape = Tape::new(Par::Seq);
        let r = comm.rank();
        let losses = batches()
            .iter()
            .map(|b| {
                let (rows, extras) = (share(ROWS, n, r), share(EXTRAS, n, r));
                let segments = [rows.len(), extras.len()];
                let part = b.part(rows, extras);
                let shard = Shard {
                    comm: &comm,
                    segments: &segments,
                };
                model
                    .train_shard_step_with(
                        &mut tape,
                        &part.batch(),
                        &shard,
                        &mut grads,
                        &mut opt,
                        Par::Seq,
                    )
                    .unwrap()
            })
            .collect();
        (losses, values(&model))
    })
}

fn assert_near(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} against one process's {w}"
        );
    }
}

#[test]
fn ranks_train_the_model_one_process_trains() {
    for heads in [Heads::Unified, Heads::PerTask] {
        let cfg = config(heads);
        let (losses, params) = one_process(&cfg);
        for n in [2, 3] {
            let out = ranks(&cfg, n);
            for (r, (rank_losses, rank_params)) in out.iter().enumerate() {
                let what = format!("{heads:?}, {n} ranks, rank {r}");
                assert_near(&format!("{what}: loss"), rank_losses, &losses, 1e-5);
                assert_near(&format!("{what}: parameters"), rank_params, &params, 1e-5);
                // The ranks hold the same bits: they applied the same summed gradients.
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert!(
                    bits(rank_params) == bits(&out[0].1),
                    "{what}: differs from rank 0"
                );
            }
        }
    }
}

/// One rank is the process itself: bit for bit.
#[test]
fn one_rank_is_one_process_bit_for_bit() {
    let cfg = config(Heads::PerTask);
    let (losses, params) = one_process(&cfg);
    let (rank_losses, rank_params) = ranks(&cfg, 1).remove(0);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&rank_losses), bits(&losses));
    assert!(bits(&rank_params) == bits(&params));
}
