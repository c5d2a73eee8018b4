//! W1-shaped steps (reference-workload.md's towers, batch and loss, with small tables) against
//! the unoptimised path: the fused softmax loss against an f64 computation from the towers'
//! embeddings, and steps on two threads with a reused tape (GEMMs split over threads, pooled
//! buffers) against sequential steps on fresh tapes.

use convcg_kernels::Par;
use convcg_model::{
    ModelConfig, OptimConfig, Optimizer, Structure, Tape, TowerConfig, TwoTowerModel,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod support;
use support::{OwnedBatch, tables};

const B: usize = 256;
const C: usize = 2 * B;
const BAG: usize = 20;
const DENSE: usize = 32;
const USER_ROWS: [usize; 5] = [5_000, 1_000, 500, 100, 3];
const PIN_ROWS: [usize; 6] = [4_000, 500, 200, 50, 10, 3];
/// The pin-id table is small enough that some candidates repeat a row's positive (accidental hits).
const PIN_ID_ROWS: u32 = 400;

fn w1_config() -> ModelConfig {
    let tower = TowerConfig {
        embedding_dim: 16,
        cross_layers: 3,
        mlp: vec![256, 128],
        structure: Structure::Parallel,
        ..TowerConfig::default()
    };
    ModelConfig {
        query: tower.clone(),
        pin: tower,
        out_dim: 64,
        temperature: 0.05,
        logq_correction: true,
        ..ModelConfig::default()
    }
}

fn w1_model(seed: u64) -> TwoTowerModel {
    let user = tables("u", &USER_ROWS, &[10_000], DENSE);
    let pin = tables("p", &PIN_ROWS, &[], DENSE);
    TwoTowerModel::new(&w1_config(), &user, &pin, seed).unwrap()
}

/// A W1-shaped batch: `B` rows with a bag of `BAG` ids each, `C` candidates, log q from q
/// uniform in [1e-6, 1e-4], engagement weights cycling through 1, 0.5, 2 and 0.
fn w1_step(rng: &mut ChaCha8Rng) -> OwnedBatch {
    let ids = |rng: &mut ChaCha8Rng, rows: u32, n: usize| -> Vec<u32> {
        (0..n).map(|_| rng.random_range(0..rows)).collect()
    };
    let mut pin: Vec<Vec<u32>> = PIN_ROWS.iter().map(|&r| ids(rng, r as u32, C)).collect();
    pin[0] = ids(rng, PIN_ID_ROWS, C);
    OwnedBatch {
        q_sparse: USER_ROWS.iter().map(|&r| ids(rng, r as u32, B)).collect(),
        q_bag: (
            ids(rng, 10_000, B * BAG),
            (0..=B).map(|i| i * BAG).collect(),
        ),
        q_dense: (0..B * DENSE)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect(),
        pin_ids: pin[0].clone(),
        p_sparse: pin,
        p_dense: (0..C * DENSE)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect(),
        log_q: (0..C)
            .map(|_| rng.random_range(1e-6f32..1e-4).ln())
            .collect(),
        weights: (0..B).map(|i| [1.0, 0.5, 2.0, 0.0][i % 4]).collect(),
        conversion: None,
        advertisers: None,
    }
}

/// The loss written out in f64 from the towers' embeddings: weighted mean over rows of
/// `-log softmax(u_i . p_j / t - log q_j)[i]`, accidental hits (`j != i`, same pin id) left out.
fn reference_loss(model: &TwoTowerModel, step: &OwnedBatch) -> f64 {
    let u = model.embed_queries(&step.query(), B, Par::Seq).unwrap();
    let p = model.embed_pins(&step.pins(), C, Par::Seq).unwrap();
    let t = f64::from(model.config().temperature);
    let ids = &step.pin_ids;
    let (mut sum, mut weight) = (0.0, 0.0);
    for i in 0..B {
        let logits: Vec<Option<f64>> = (0..C)
            .map(|j| {
                if j != i && ids[j] == ids[i] {
                    return None;
                }
                let dot: f64 = u
                    .row(i)
                    .iter()
                    .zip(p.row(j))
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                Some(dot / t - f64::from(step.log_q[j]))
            })
            .collect();
        let max = logits
            .iter()
            .flatten()
            .fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        let lse = max
            + logits
                .iter()
                .flatten()
                .map(|x| (x - max).exp())
                .sum::<f64>()
                .ln();
        let w = f64::from(step.weights[i]);
        sum += w * (lse - logits[i].expect("the positive is never masked"));
        weight += w;
    }
    sum / weight
}

#[test]
fn fused_loss_matches_f64_reference_at_w1_shape() {
    let model = w1_model(1);
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let step = w1_step(&mut rng);
    let hits = (0..B)
        .map(|i| {
            (0..C)
                .filter(|&j| j != i && step.pin_ids[j] == step.pin_ids[i])
                .count()
        })
        .sum::<usize>();
    assert!(hits > 0, "the batch must exercise accidental-hit masking");
    for par in [Par::Seq, Par::rayon(2)] {
        let mut tape = Tape::new(par);
        let loss = model.loss(&mut tape, &step.batch()).unwrap();
        let (fused, reference) = (f64::from(tape.scalar(loss)), reference_loss(&model, &step));
        assert!(
            (fused - reference).abs() <= 1e-5 * reference.abs(),
            "{par:?}: fused loss {fused} vs f64 reference {reference}"
        );
    }
}

/// Largest absolute and mean absolute difference over every parameter of two models.
fn param_diff(a: &TwoTowerModel, b: &TwoTowerModel) -> (f32, f64) {
    let (pa, pb) = (a.params(), b.params());
    let dense = pa
        .dense_params()
        .iter()
        .zip(pb.dense_params())
        .map(|(x, y)| (&x.value, &y.value));
    let tables = pa
        .tables()
        .iter()
        .zip(pb.tables())
        .map(|(x, y)| (&x.value, &y.value));
    let (mut max, mut sum, mut n) = (0f32, 0f64, 0usize);
    for (x, y) in dense.chain(tables) {
        for (u, v) in x.iter().zip(y) {
            let d = (u - v).abs();
            max = max.max(d);
            sum += f64::from(d);
            n += 1;
        }
    }
    (max, sum / n as f64)
}

#[test]
fn optimised_steps_match_sequential_fresh_steps() {
    const STEPS: usize = 4;
    let optim = OptimConfig {
        adam_lr: 1e-3,
        adagrad_lr: 0.05,
        ..OptimConfig::default()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let steps: Vec<OwnedBatch> = (0..STEPS).map(|_| w1_step(&mut rng)).collect();

    // The optimised path: two threads (GEMMs split over them), one tape reused across steps.
    let mut fast = w1_model(4);
    let mut fast_opt = Optimizer::new(&optim, fast.params()).unwrap();
    let mut grads = fast.params().zero_grads();
    let par = Par::rayon(2);
    let mut tape = Tape::new(par);
    // The reference path: one thread (faer's sequential GEMM whole), a fresh tape every step.
    let mut slow = w1_model(4);
    let mut slow_opt = Optimizer::new(&optim, slow.params()).unwrap();
    let mut slow_grads = slow.params().zero_grads();

    for (s, step) in steps.iter().enumerate() {
        let batch = step.batch();
        let a = fast
            .train_step_with(&mut tape, &batch, &mut grads, &mut fast_opt, par)
            .unwrap();
        let b = slow
            .train_step(&batch, &mut slow_grads, &mut slow_opt, Par::Seq)
            .unwrap();
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "step {s}: loss {a} (optimised) vs {b} (reference)"
        );
    }
    // The paths differ only in how GEMM sums are split, so the parameters agree to rounding,
    // far inside the bounds below. Adam moves a weight by up to about lr per
    // step whatever its gradient's size, so a gradient that is pure rounding noise could differ in
    // sign between the paths; the bound on the largest difference leaves room for a few of those.
    let (max, mean) = param_diff(&fast, &slow);
    assert!(
        max <= 1e-4,
        "largest parameter difference {max} after {STEPS} steps"
    );
    assert!(
        mean <= 1e-7,
        "mean parameter difference {mean} after {STEPS} steps"
    );
}
