//! Whole-model checks: a finite-difference gradient check of one full step on a tiny model, and a
//! toy retrieval problem the model must learn.

use convcg_kernels::{Par, Precision};
use convcg_model::{
    CrossKind, FeatureTables, Heads, ModelConfig, OptimConfig, Optimizer, Structure, Tape,
    TaskRows, TowerConfig, TowerInput, TrainBatch, TwoTowerModel,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod support;
use support::{OwnedBatch, advertisers_of, param_bits, tables, tiny_batch, tiny_config};

fn loss_of(model: &TwoTowerModel, data: &OwnedBatch) -> f64 {
    let mut tape = Tape::new(Par::Seq);
    let l = model.loss(&mut tape, &data.batch()).unwrap();
    tape.scalar(l) as f64
}

/// Compares an analytic derivative with central differences, skipping points where the one-sided
/// differences disagree (a ReLU kink crossed by the step), which central differences cannot judge.
fn check(analytic: f64, f: &mut dyn FnMut(f64) -> f64, what: &str) -> bool {
    // f32 losses: a step of 2e-3 keeps round-off near 1e-4, below the tolerance, and truncation small.
    let h = 2e-3;
    let (fp, f0, fm) = (f(h), f(0.0), f(-h));
    let (right, left) = ((fp - f0) / h, (f0 - fm) / h);
    if (right - left).abs() > 0.05 * (right.abs() + left.abs()) + 5e-4 {
        return false;
    }
    let numeric = (fp - fm) / (2.0 * h);
    let tol = 2e-4 + 2e-2 * numeric.abs().max(analytic.abs());
    assert!(
        (numeric - analytic).abs() <= tol,
        "{what}: analytic {analytic} vs finite difference {numeric}"
    );
    true
}

fn gradient_check(cfg: ModelConfig) {
    gradient_check_with(cfg, &tables("f", &[5], &[4], 3));
}

/// The check on the tiny batch with these query tables (one sparse feature of 5 rows, one bag
/// of 4, 3 dense) beside the pin tower's `f0` (4 rows) and `f1` (3 rows).
fn gradient_check_with(cfg: ModelConfig, qt: &FeatureTables) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let pt = tables("f", &[4, 3], &[], 2);
    let mut model = TwoTowerModel::new(&cfg, qt, &pt, 11).unwrap();
    let data = tiny_batch(&mut rng, 7);
    let mut grads = model.params().zero_grads();
    let mut tape = Tape::new(Par::Seq);
    let loss = model.loss(&mut tape, &data.batch()).unwrap();
    tape.backward(loss, model.params(), &mut grads);

    let (mut checked, mut total) = (0, 0);
    for p in 0..model.params().dense_params().len() {
        for j in 0..model.params().dense_params()[p].value.len() {
            let analytic = grads.dense_all()[p][j] as f64;
            let name = format!("{}[{j}]", model.params().dense_params()[p].name);
            let orig = model.params().dense_params()[p].value[j];
            let mut f = |delta: f64| {
                model.params_mut().dense_params_mut()[p].value[j] = orig + delta as f32;
                let l = loss_of(&model, &data);
                model.params_mut().dense_params_mut()[p].value[j] = orig;
                l
            };
            total += 1;
            checked += usize::from(check(analytic, &mut f, &name));
        }
    }
    for t in 0..model.params().tables().len() {
        let (rows, dim) = (
            model.params().tables()[t].rows,
            model.params().tables()[t].dim,
        );
        let g = &grads.tables_all()[t];
        for r in 0..rows {
            for c in 0..dim {
                let analytic = g
                    .rows()
                    .iter()
                    .position(|&x| x as usize == r)
                    .map_or(0.0, |slot| g.values()[slot * dim + c] as f64);
                let name = format!("{}[{r}, {c}]", model.params().tables()[t].name);
                let orig = model.params().tables()[t].value[r * dim + c];
                let mut f = |delta: f64| {
                    model.params_mut().tables_mut()[t].value[r * dim + c] = orig + delta as f32;
                    let l = loss_of(&model, &data);
                    model.params_mut().tables_mut()[t].value[r * dim + c] = orig;
                    l
                };
                total += 1;
                checked += usize::from(check(analytic, &mut f, &name));
            }
        }
    }
    assert!(
        checked * 10 >= total * 9,
        "only {checked} of {total} derivatives were away from kinks"
    );
}

/// With bf16 products the loss and every gradient stay within bf16's rounding of the f32 step's:
/// the mixed-precision path computes the same function, less precisely.
#[test]
fn bf16_step_stays_within_bf16_rounding_of_the_f32_step() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let qt = tables("f", &[5], &[4], 3);
    let pt = tables("f", &[4, 3], &[], 2);
    let model = TwoTowerModel::new(&tiny_config(Structure::Parallel), &qt, &pt, 11).unwrap();
    let data = tiny_batch(&mut rng, 40);
    let step = |precision: Precision| {
        let mut tape = Tape::new(Par::rayon(2));
        tape.set_precision(precision);
        let mut grads = model.params().zero_grads();
        let loss = model.loss(&mut tape, &data.batch()).unwrap();
        tape.backward(loss, model.params(), &mut grads);
        (tape.scalar(loss), grads)
    };
    let ((loss32, g32), (loss16, g16)) = (step(Precision::F32), step(Precision::Bf16));
    assert!(
        (loss16 - loss32).abs() <= 1e-2 * loss32.abs(),
        "loss: bf16 {loss16} against f32 {loss32}"
    );
    let relative = |a: &[f32], b: &[f32]| {
        let diff: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let norm: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        (diff / norm.max(1e-30)).sqrt()
    };
    for (p, (a, b)) in g16.dense_all().iter().zip(g32.dense_all()).enumerate() {
        let name = &model.params().dense_params()[p].name;
        let r = relative(a, b);
        assert!(
            r <= 5e-2,
            "{name}: bf16 gradient {r:e} away from f32's (relative L2)"
        );
    }
    for (t, (a, b)) in g16.tables_all().iter().zip(g32.tables_all()).enumerate() {
        assert_eq!(a.rows(), b.rows(), "table {t}: rows touched");
        let r = relative(a.values(), b.values());
        assert!(
            r <= 5e-2,
            "table {t}: bf16 gradient {r:e} away from f32's (relative L2)"
        );
    }
}

#[test]
fn full_step_gradients_match_finite_differences_parallel() {
    gradient_check(tiny_config(Structure::Parallel));
}

#[test]
fn full_step_gradients_match_finite_differences_stacked() {
    gradient_check(tiny_config(Structure::Stacked));
}

/// A head per task: both heads' losses and the advertiser-level loss on the conversion head.
#[test]
fn full_step_gradients_match_finite_differences_per_task_heads() {
    gradient_check(ModelConfig {
        heads: Heads::PerTask,
        advertiser_loss_weight: 0.8,
        ..tiny_config(Structure::Parallel)
    });
}

/// The unified head without the advertiser-level loss (the other checks have it on).
#[test]
fn full_step_gradients_match_finite_differences_without_advertiser_loss() {
    gradient_check(ModelConfig {
        advertiser_loss_weight: 0.0,
        ..tiny_config(Structure::Stacked)
    });
}

/// The query bag reads the pin tower's `f0` table (its ids are pin ids): one table, which both
/// towers' gradients reach.
#[test]
fn full_step_gradients_match_finite_differences_with_a_shared_table() {
    let mut qt = tables("f", &[5], &[4], 3);
    qt.bags[0].pin_table = Some("f0".into());
    let pt = tables("f", &[4, 3], &[], 2);
    let cfg = tiny_config(Structure::Parallel);
    let model = TwoTowerModel::new(&cfg, &qt, &pt, 11).unwrap();
    let names: Vec<&str> = model
        .params()
        .tables()
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    assert_eq!(names, ["query.emb.f0", "pin.emb.f0", "pin.emb.f1"]);
    gradient_check_with(cfg, &qt);
}

/// Sharing a table needs a one-id pin feature of the same rows and towers of the same width,
/// and only query features may name a pin table.
#[test]
fn a_shared_table_that_does_not_fit_is_refused() {
    let cfg = tiny_config(Structure::Parallel);
    let pt = tables("f", &[4, 3], &[], 2);
    let refused = |qt: &FeatureTables, pt: &FeatureTables, cfg: &ModelConfig| {
        TwoTowerModel::new(cfg, qt, pt, 1).unwrap_err().to_string()
    };
    let sharing = |feature: &str, rows: usize| {
        let mut qt = tables("f", &[5], &[rows], 3);
        qt.bags[0].pin_table = Some(feature.into());
        qt
    };
    let msg = refused(&sharing("f9", 4), &pt, &cfg);
    assert!(
        msg.contains("`f9`") && msg.contains("does not have"),
        "{msg}"
    );
    let msg = refused(&sharing("f0", 5), &pt, &cfg);
    assert!(msg.contains("5 rows") && msg.contains("of 4 rows"), "{msg}");
    let wider = ModelConfig {
        query: TowerConfig {
            embedding_dim: 4,
            ..cfg.query.clone()
        },
        ..cfg.clone()
    };
    let msg = refused(&sharing("f0", 4), &pt, &wider);
    assert!(msg.contains("model.query.embedding_dim"), "{msg}");
    let mut pin_sharing = pt.clone();
    pin_sharing.sparse[1].pin_table = Some("f0".into());
    let msg = refused(&tables("f", &[5], &[4], 3), &pin_sharing, &cfg);
    assert!(msg.contains("only query features"), "{msg}");
}

/// With an identity code, each embedding is the same model's embedding without one followed by
/// the unit code, the query's scaled by `id_code_weight` (the code columns leave the body and
/// its parameters untouched); a zero code (an empty bag) is left as zeros.
#[test]
fn an_identity_code_joins_the_output_beside_the_head() {
    let cfg = ModelConfig {
        id_code_weight: 3.0,
        ..tiny_config(Structure::Parallel)
    };
    let (dense, code) = (2, 4);
    let plain = tables("f", &[5], &[], dense);
    let coded = FeatureTables {
        dense: dense + code,
        id_code: code,
        ..plain.clone()
    };
    let without = TwoTowerModel::new(&cfg, &plain, &plain, 3).unwrap();
    let with = TwoTowerModel::new(&cfg, &coded, &coded, 3).unwrap();
    let ids = [1u32, 4, 2];
    let own = [0.5f32, -1.0, 0.25, 2.0, -0.5, 0.0];
    let codes = [[3.0f32, 0.0, -4.0, 0.0], [0.0; 4], [1.0, 1.0, 1.0, 1.0]];
    let joined: Vec<f32> = (0..3)
        .flat_map(|i| {
            own[i * dense..(i + 1) * dense]
                .iter()
                .chain(&codes[i])
                .copied()
        })
        .collect();
    for pins in [false, true] {
        let embed = |m: &TwoTowerModel, dense: &[f32]| {
            let input = TowerInput {
                n: 3,
                sparse: vec![&ids],
                bags: vec![],
                dense,
            };
            match pins {
                true => m.embed_pins(&input, 2, Par::Seq).unwrap(),
                false => m.embed_queries(&input, 2, Par::Seq).unwrap(),
            }
        };
        let head = embed(&without, &own);
        let both = embed(&with, &joined);
        assert_eq!(both.ncols(), cfg.out_dim + code);
        for (i, c) in codes.iter().enumerate() {
            let norm = c.iter().map(|x| x * x).sum::<f32>().sqrt();
            let weight = if pins { 1.0 } else { cfg.id_code_weight };
            let want: Vec<f32> = head
                .row(i)
                .iter()
                .copied()
                .chain(
                    c.iter()
                        .map(|x| if norm > 0.0 { weight * x / norm } else { 0.0 }),
                )
                .collect();
            for (got, want) in both.row(i).iter().zip(want) {
                assert!((got - want).abs() < 1e-5, "row {i}: {got} against {want}");
            }
        }
    }
}

/// Both towers' codes must be as wide, and fit in the dense columns.
#[test]
fn identity_codes_that_do_not_fit_are_refused() {
    let cfg = tiny_config(Structure::Parallel);
    let coded = |dense, id_code| FeatureTables {
        dense,
        id_code,
        ..tables("f", &[5], &[], dense)
    };
    let msg = TwoTowerModel::new(&cfg, &coded(6, 4), &coded(6, 2), 1)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("4 columns") && msg.contains("has 2"), "{msg}");
    let msg = TwoTowerModel::new(&cfg, &coded(2, 4), &coded(2, 4), 1)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("among 2 dense"), "{msg}");
}

fn with_cross(kind: CrossKind, structure: Structure) -> ModelConfig {
    let base = tiny_config(structure);
    let tower = TowerConfig {
        cross_kind: kind,
        cross_rank: 2,
        cross_experts: 3,
        ..base.query.clone()
    };
    ModelConfig {
        query: tower.clone(),
        pin: tower,
        ..base
    }
}

#[test]
fn full_step_gradients_match_finite_differences_low_rank_cross() {
    gradient_check(with_cross(CrossKind::LowRank, Structure::Stacked));
}

#[test]
fn full_step_gradients_match_finite_differences_mixture_cross() {
    gradient_check(with_cross(CrossKind::Mixture, Structure::Parallel));
}

/// Users 0..20 each like pin (3u + 1) mod 20; after training, each user's best pin is its own.
#[test]
fn learns_a_toy_retrieval_problem() {
    let n_items = 20u32;
    let qt = tables("f", &[n_items as usize], &[], 0);
    let pt = tables("f", &[n_items as usize], &[], 0);
    let cfg = ModelConfig {
        query: TowerConfig {
            embedding_dim: 8,
            cross_layers: 1,
            mlp: vec![16],
            structure: Structure::Parallel,
            ..TowerConfig::default()
        },
        pin: TowerConfig {
            embedding_dim: 8,
            cross_layers: 1,
            mlp: vec![16],
            structure: Structure::Parallel,
            ..TowerConfig::default()
        },
        out_dim: 8,
        temperature: 0.1,
        logq_correction: false,
        ..ModelConfig::default()
    };
    let mut model = TwoTowerModel::new(&cfg, &qt, &pt, 5).unwrap();
    let optim = OptimConfig {
        adam_lr: 1e-2,
        adagrad_lr: 0.2,
        ..OptimConfig::default()
    };
    let mut opt = Optimizer::new(&optim, model.params()).unwrap();
    let mut grads = model.params().zero_grads();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let target = |u: u32| (3 * u + 1) % n_items;
    let mut first = None;
    let mut last = 0.0;
    for _ in 0..300 {
        let users: Vec<u32> = (0..16).map(|_| rng.random_range(0..n_items)).collect();
        let pins: Vec<u32> = users.iter().map(|&u| target(u)).collect();
        let ones = vec![1.0; 16];
        let zeros = vec![0.0; 16];
        let batch = TrainBatch {
            query: TowerInput {
                n: 16,
                sparse: vec![&users],
                bags: vec![],
                dense: &[],
            },
            pins: TowerInput {
                n: 16,
                sparse: vec![&pins],
                bags: vec![],
                dense: &[],
            },
            pin_ids: &pins,
            log_q: &zeros,
            engagement: Some(TaskRows {
                weights: &ones,
                task_weight: 1.0,
            }),
            conversion: None,
            advertisers: None,
        };
        last = model
            .train_step(&batch, &mut grads, &mut opt, Par::Seq)
            .unwrap();
        first.get_or_insert(last);
    }
    assert!(last < 0.5 * first.unwrap(), "loss {first:?} -> {last}");
    let all: Vec<u32> = (0..n_items).collect();
    let input = TowerInput {
        n: n_items as usize,
        sparse: vec![&all],
        bags: vec![],
        dense: &[],
    };
    let q = model.embed_queries(&input, 7, Par::Seq).unwrap();
    let p = model.embed_pins(&input, 7, Par::Seq).unwrap();
    let scores = q.dot(&p.t());
    let hits = (0..n_items)
        .filter(|&u| {
            let row = scores.row(u as usize);
            let best = (0..n_items as usize)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap();
            best as u32 == target(u)
        })
        .count();
    assert!(
        hits >= 18,
        "only {hits} of {n_items} users retrieve their pin first"
    );
}

/// Every parameter's bits, dense then tables.
/// A tape reused across steps, including steps of different shapes, trains exactly like fresh
/// tapes.
fn reused_tape_matches_fresh(structure: Structure) {
    let qt = tables("f", &[5], &[4], 3);
    let pt = tables("f", &[4, 3], &[], 2);
    let optim = OptimConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let batches: Vec<OwnedBatch> = [7, 7, 5, 7, 9, 5, 7]
        .iter()
        .map(|&n| tiny_batch(&mut rng, n))
        .collect();

    let mut fresh = TwoTowerModel::new(&tiny_config(structure), &qt, &pt, 11).unwrap();
    let mut reused = fresh.clone();
    let mut fresh_opt = Optimizer::new(&optim, fresh.params()).unwrap();
    let mut reused_opt = Optimizer::new(&optim, reused.params()).unwrap();
    let mut fresh_grads = fresh.params().zero_grads();
    let mut reused_grads = reused.params().zero_grads();
    let mut tape = Tape::new(Par::Seq);
    for (i, data) in batches.iter().enumerate() {
        let a = fresh
            .train_step(&data.batch(), &mut fresh_grads, &mut fresh_opt, Par::Seq)
            .unwrap();
        let b = reused
            .train_step_with(
                &mut tape,
                &data.batch(),
                &mut reused_grads,
                &mut reused_opt,
                Par::Seq,
            )
            .unwrap();
        assert_eq!(a.to_bits(), b.to_bits(), "step {i}: loss {a} vs {b}");
        assert!(
            param_bits(&fresh) == param_bits(&reused),
            "step {i}: parameters differ"
        );
    }
}

#[test]
fn reused_tape_matches_fresh_tapes_parallel() {
    reused_tape_matches_fresh(Structure::Parallel);
}

#[test]
fn reused_tape_matches_fresh_tapes_stacked() {
    reused_tape_matches_fresh(Structure::Stacked);
}

/// `data` plus `extra` candidates (pin ids 10.., random features) with these log q.
fn with_extra_candidates(rng: &mut ChaCha8Rng, data: &OwnedBatch, log_q: &[f32]) -> OwnedBatch {
    let mut out = data.clone();
    for (k, &q) in log_q.iter().enumerate() {
        out.p_sparse[0].push(rng.random_range(0..4));
        out.p_sparse[1].push(rng.random_range(0..3));
        out.p_dense
            .extend((0..2).map(|_| rng.random_range(-1.0f32..1.0)));
        out.pin_ids.push(10 + k as u32);
        out.log_q.push(q);
    }
    out.advertisers = Some(advertisers_of(&out.pin_ids));
    out
}

#[test]
fn candidates_with_infinite_log_q_do_not_count() {
    // Two real extra negatives, or the same two plus one absent (log q = +inf) between them:
    // the loss and every gradient must be the same, with or without the logQ correction.
    let qt = tables("f", &[5], &[4], 3);
    let pt = tables("f", &[4, 3], &[], 2);
    for correction in [true, false] {
        let cfg = ModelConfig {
            logq_correction: correction,
            ..tiny_config(Structure::Parallel)
        };
        let model = TwoTowerModel::new(&cfg, &qt, &pt, 5).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let data = tiny_batch(&mut rng, 5);
        let with_absent = with_extra_candidates(&mut rng, &data, &[-2.0, f32::INFINITY, -1.5]);
        let present = with_absent.clone_without(6);
        assert_eq!(present.pin_ids.len(), 7);
        let run = |d: &OwnedBatch| {
            let mut tape = Tape::new(Par::Seq);
            let mut grads = model.params().zero_grads();
            let l = model.loss(&mut tape, &d.batch()).unwrap();
            tape.backward(l, model.params(), &mut grads);
            (
                tape.scalar(l),
                grads
                    .dense_all()
                    .iter()
                    .flatten()
                    .copied()
                    .collect::<Vec<f32>>(),
            )
        };
        let (l_absent, g_absent) = run(&with_absent);
        let (l_present, g_present) = run(&present);
        assert!(l_absent.is_finite());
        assert!(
            (l_absent - l_present).abs() <= 1e-6 * l_present.abs(),
            "{l_absent} vs {l_present}"
        );
        for (a, b) in g_absent.iter().zip(&g_present) {
            assert!((a - b).abs() <= 1e-6 + 1e-5 * b.abs(), "{a} vs {b}");
        }
    }

    // A positive's log q must be finite, and none may be NaN.
    let model = TwoTowerModel::new(&tiny_config(Structure::Parallel), &qt, &pt, 5).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut data = tiny_batch(&mut rng, 4);
    data.log_q[1] = f32::INFINITY;
    assert!(model.loss(&mut Tape::new(Par::Seq), &data.batch()).is_err());
    data.log_q[1] = f32::NAN;
    assert!(model.loss(&mut Tape::new(Par::Seq), &data.batch()).is_err());
}

impl OwnedBatch {
    /// A copy without candidate `j` (an extra one, `j >= n`).
    fn clone_without(&self, j: usize) -> OwnedBatch {
        let drop = |v: &Vec<u32>| {
            v.iter()
                .enumerate()
                .filter(|&(k, _)| k != j)
                .map(|(_, &x)| x)
                .collect::<Vec<u32>>()
        };
        OwnedBatch {
            q_sparse: self.q_sparse.clone(),
            q_bag: self.q_bag.clone(),
            q_dense: self.q_dense.clone(),
            p_sparse: self.p_sparse.iter().map(drop).collect(),
            p_dense: self
                .p_dense
                .chunks(2)
                .enumerate()
                .filter(|&(k, _)| k != j)
                .flat_map(|(_, c)| c.iter().copied())
                .collect(),
            pin_ids: drop(&self.pin_ids),
            log_q: self
                .log_q
                .iter()
                .enumerate()
                .filter(|&(k, _)| k != j)
                .map(|(_, &q)| q)
                .collect(),
            weights: self.weights.clone(),
            conversion: self.conversion.clone(),
            advertisers: self.advertisers.as_ref().map(drop),
        }
    }
}

/// A NaN in a parameter, or an infinity in an input, stops the step before the optimiser with
/// an error naming where, and leaves every parameter as it was, so that the batch can be
/// skipped; the next good batch trains as usual.
#[test]
fn non_finite_values_stop_the_step_before_the_update() {
    let qt = tables("f", &[5], &[4], 3);
    let pt = tables("f", &[4, 3], &[], 2);
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let good = tiny_batch(&mut rng, 6);
    let mut model = TwoTowerModel::new(&tiny_config(Structure::Parallel), &qt, &pt, 3).unwrap();
    let mut opt = Optimizer::new(&OptimConfig::default(), model.params()).unwrap();
    let mut grads = model.params().zero_grads();

    // An infinite dense input makes the loss (or a gradient) non-finite.
    let mut bad_input = tiny_batch(&mut rng, 6);
    bad_input.q_dense[1] = f32::INFINITY;
    let before = param_bits(&model);
    let err = model
        .train_step(&bad_input.batch(), &mut grads, &mut opt, Par::Seq)
        .unwrap_err();
    match &err {
        convcg_model::Error::NonFinite {
            what,
            parameters_untouched,
        } => {
            assert!(*parameters_untouched);
            assert!(what.contains("loss") || what.contains("gradient"), "{what}");
        }
        other => panic!("expected NonFinite, got {other}"),
    }
    assert!(
        param_bits(&model) == before,
        "a refused step changed parameters"
    );

    // A NaN in one weight is named.
    let mut broken = model.clone();
    let w = broken
        .params_mut()
        .dense_params_mut()
        .iter_mut()
        .find(|p| p.name.contains("cross"))
        .expect("a cross layer weight");
    w.value[0] = f32::NAN;
    let name = w.name.clone();
    let err = broken
        .train_step(&good.batch(), &mut grads, &mut opt, Par::Seq)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("non-finite") && err.contains(&format!("parameter {name}")),
        "{err}"
    );

    // The untouched model still trains on a good batch.
    let loss = model
        .train_step(&good.batch(), &mut grads, &mut opt, Par::Seq)
        .unwrap();
    assert!(loss.is_finite());
}

/// Every row counts with its weight in each task: the unified head's one softmax with summed
/// row weights, and a per-task model's two heads, both give the two tasks' losses computed apart,
/// averaged by each task's total weight.
#[test]
fn task_losses_combine_as_their_weighted_mean() {
    let qt = tables("f", &[5], &[4], 3);
    let pt = tables("f", &[4, 3], &[], 2);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let data = tiny_batch(&mut rng, 6);
    for heads in [Heads::Unified, Heads::PerTask] {
        let cfg = ModelConfig {
            heads,
            advertiser_loss_weight: 0.0,
            ..tiny_config(Structure::Parallel)
        };
        let model = TwoTowerModel::new(&cfg, &qt, &pt, 4).unwrap();
        let loss = |batch: TrainBatch<'_>| {
            let mut tape = Tape::new(Par::Seq);
            let l = model.loss(&mut tape, &batch).unwrap();
            f64::from(tape.scalar(l))
        };
        let both = loss(data.batch());
        let engagement = loss(TrainBatch {
            conversion: None,
            ..data.batch()
        });
        let conversion = loss(TrainBatch {
            engagement: None,
            ..data.batch()
        });
        assert_ne!(engagement, conversion);
        let mass = |w: &[f32], t: f64| t * w.iter().map(|&x| f64::from(x)).sum::<f64>();
        let (conv_weights, _) = data.conversion.as_ref().expect("the conversion task");
        let (me, mc) = (mass(&data.weights, 1.0), mass(conv_weights, 0.7));
        let want = (me * engagement + mc * conversion) / (me + mc);
        assert!(
            (both - want).abs() <= 1e-5 * want.abs(),
            "{heads:?}: {both} vs {want}"
        );
    }
}
