//! W1's model, optimiser and seeded batches (shared/reference-workload.md), shared by the
//! criterion benchmark `benches/w1.rs` and the phase breakdown `examples/w1_phases.rs`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use convcg_kernels::{Bf16Engine, Par, Precision};
use convcg_model::{
    FeatureTables, Grads, ModelConfig, OptimConfig, Optimizer, Structure, TableDef, Tape, TaskRows,
    TowerConfig, TowerInput, TrainBatch, TwoTowerModel,
};

/// Positive pairs per step.
pub const B: usize = 2048;
const H: usize = 2048;
const BAG: usize = 20;
const DENSE: usize = 32;
const USER_ROWS: [usize; 5] = [1_000_000, 100_000, 1_000, 100, 3];
const USER_BAG_ROWS: usize = 10_000;
const PIN_ROWS: [usize; 6] = [1_000_000, 50_000, 20_000, 5_000, 100, 3];

fn defs(prefix: &str, rows: &[usize]) -> Vec<TableDef> {
    rows.iter()
        .enumerate()
        .map(|(i, &rows)| TableDef::new(format!("{prefix}{i}"), rows))
        .collect()
}

fn tables(sparse: &[usize], bags: &[usize]) -> FeatureTables {
    FeatureTables {
        sparse: defs("f", sparse),
        bags: defs("bag", bags),
        dense: DENSE,
        id_code: 0,
    }
}

/// One step's inputs, owned; made before timing from one seeded generator.
pub struct Step {
    /// Rows: `B`, or a rank's share of them ([`Step::part`]).
    rows: usize,
    user_ids: Vec<Vec<u32>>,
    bag_ids: Vec<u32>,
    bag_offsets: Vec<usize>,
    user_dense: Vec<f32>,
    pin_ids: Vec<Vec<u32>>,
    pin_dense: Vec<f32>,
    log_q: Vec<f32>,
    weights: Vec<f32>,
}

impl Step {
    fn new(rng: &mut ChaCha8Rng) -> Self {
        let c = B + H;
        let ids = |rng: &mut ChaCha8Rng, rows: usize, n: usize| -> Vec<u32> {
            (0..n).map(|_| rng.random_range(0..rows as u32)).collect()
        };
        let normal = |rng: &mut ChaCha8Rng, n: usize| -> Vec<f32> {
            (0..n).map(|_| rng.sample(StandardNormal)).collect()
        };
        Self {
            rows: B,
            user_ids: USER_ROWS.iter().map(|&r| ids(rng, r, B)).collect(),
            bag_ids: ids(rng, USER_BAG_ROWS, B * BAG),
            bag_offsets: (0..=B).map(|i| i * BAG).collect(),
            user_dense: normal(rng, B * DENSE),
            pin_ids: PIN_ROWS.iter().map(|&r| ids(rng, r, c)).collect(),
            pin_dense: normal(rng, c * DENSE),
            log_q: (0..c)
                .map(|_| rng.random_range(1e-6f32..1e-4).ln())
                .collect(),
            weights: vec![1.0; B],
        }
    }

    /// Bytes of the step's inputs.
    #[allow(dead_code)] // the phase example uses it; the benchmark does not
    pub fn bytes(&self) -> usize {
        let ids: usize = self
            .user_ids
            .iter()
            .chain(&self.pin_ids)
            .map(Vec::len)
            .sum();
        let floats = self.user_dense.len() + self.pin_dense.len() + self.log_q.len();
        4 * (ids + self.bag_ids.len() + floats + self.weights.len())
            + std::mem::size_of::<usize>() * self.bag_offsets.len()
    }

    /// The rows `rows` of this step with their candidates: their positives, then their hard
    /// negatives (row `i`'s is candidate `B + i`), two segments of `rows.len()` each. A rank's
    /// share of a data-parallel step.
    #[allow(dead_code)] // the ranks example uses it; the benchmark does not
    pub fn part(&self, rows: std::ops::Range<usize>) -> Step {
        let n = self.rows;
        let cands: Vec<usize> = rows.clone().chain(rows.start + n..rows.end + n).collect();
        let pick = |v: &[u32]| cands.iter().map(|&c| v[c]).collect::<Vec<u32>>();
        let dense = |v: &[f32], idx: &mut dyn Iterator<Item = usize>| -> Vec<f32> {
            idx.flat_map(|i| v[i * DENSE..(i + 1) * DENSE].iter().copied())
                .collect()
        };
        Step {
            rows: rows.len(),
            user_ids: self
                .user_ids
                .iter()
                .map(|f| f[rows.clone()].to_vec())
                .collect(),
            bag_ids: self.bag_ids[rows.start * BAG..rows.end * BAG].to_vec(),
            bag_offsets: (0..=rows.len()).map(|i| i * BAG).collect(),
            user_dense: dense(&self.user_dense, &mut rows.clone()),
            pin_ids: self.pin_ids.iter().map(|f| pick(f)).collect(),
            pin_dense: dense(&self.pin_dense, &mut cands.iter().copied()),
            log_q: cands.iter().map(|&c| self.log_q[c]).collect(),
            weights: self.weights[rows].to_vec(),
        }
    }

    /// Each table's ids in this step, user tables first (the single-id ones, then the bag), then
    /// the pin tables: what the step's embedding gradients touch.
    #[allow(dead_code)] // the ranks example uses it; the benchmark does not
    pub fn table_ids(&self) -> Vec<&[u32]> {
        let user = self.user_ids.iter().map(Vec::as_slice);
        let bag = std::iter::once(self.bag_ids.as_slice());
        user.chain(bag)
            .chain(self.pin_ids.iter().map(Vec::as_slice))
            .collect()
    }

    /// The step as the model takes it.
    pub fn batch(&self) -> TrainBatch<'_> {
        TrainBatch {
            query: TowerInput {
                n: self.rows,
                sparse: self.user_ids.iter().map(Vec::as_slice).collect(),
                bags: vec![(&self.bag_ids, &self.bag_offsets)],
                dense: &self.user_dense,
            },
            pins: TowerInput {
                n: 2 * self.rows,
                sparse: self.pin_ids.iter().map(Vec::as_slice).collect(),
                bags: vec![],
                dense: &self.pin_dense,
            },
            pin_ids: &self.pin_ids[0],
            log_q: &self.log_q,
            engagement: Some(TaskRows {
                weights: &self.weights,
                task_weight: 1.0,
            }),
            conversion: None,
            advertisers: None,
        }
    }
}

/// The thread count: `CONVCG_THREADS`, else all cores (W1 fixes all cores; 1 gives the
/// one-thread figure the peers also report).
pub fn threads() -> usize {
    std::env::var("CONVCG_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The precision of the step's products from `CONVCG_PRECISION`: `f32` (unset, the default) or
/// `bf16` (on AMX; elsewhere the products are emulated on rounded copies, which times nothing
/// useful, so the setup says so).
pub fn precision() -> Precision {
    match std::env::var("CONVCG_PRECISION").as_deref() {
        Err(_) | Ok("f32") => Precision::F32,
        Ok("bf16") => {
            if Bf16Engine::detect() != Bf16Engine::Amx {
                eprintln!("W1: no AMX on this CPU: bf16 products are emulated in f32");
            }
            Precision::Bf16
        }
        Ok(other) => panic!("CONVCG_PRECISION={other:?}: expected f32 or bf16"),
    }
}

/// A pool of `threads` worker threads for the steps to run inside, as `convcg train` runs its
/// epochs inside one: the thread that calls a kernel is then one of the pool's workers and
/// takes a share of each parallel loop itself. Called from outside a pool, every parallel loop
/// of a step would wake the pool's workers and put the caller to sleep until they finished
/// (`perf stat -e context-switches` shows the difference).
pub fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("W1 cannot start its worker threads")
}

/// W1's model, optimiser, gradient store, a tape kept across steps (as the trainer keeps one),
/// and 23 seeded steps, after 3 warm-up steps whose losses are checked to be finite.
pub struct W1 {
    /// The model.
    pub model: TwoTowerModel,
    /// Adam and row-wise Adagrad.
    pub opt: Optimizer,
    /// The gradient store.
    pub grads: Grads,
    /// The tape.
    pub tape: Tape,
    /// The pre-made steps.
    pub steps: Vec<Step>,
    /// The parallelism of every step.
    pub par: Par,
    /// The next step to run (the warm-up steps came first).
    pub next: usize,
}

impl W1 {
    /// Builds everything, its products in `precision`, and runs the warm-up steps.
    pub fn new(threads: usize, precision: Precision) -> W1 {
        let par = if threads > 1 {
            Par::rayon(threads)
        } else {
            Par::Seq
        };
        let tower = TowerConfig {
            embedding_dim: 16,
            cross_layers: 3,
            mlp: vec![256, 128],
            structure: Structure::Parallel,
            ..TowerConfig::default()
        };
        let cfg = ModelConfig {
            query: tower.clone(),
            pin: tower,
            out_dim: 64,
            temperature: 0.05,
            logq_correction: true,
            ..ModelConfig::default()
        };
        let mut model = TwoTowerModel::new(
            &cfg,
            &tables(&USER_ROWS, &[USER_BAG_ROWS]),
            &tables(&PIN_ROWS, &[]),
            0,
        )
        .unwrap();
        let optim = OptimConfig {
            adam_lr: 1e-3,
            adagrad_lr: 0.05,
            ..OptimConfig::default()
        };
        let mut opt = Optimizer::new(&optim, model.params()).unwrap();
        let mut grads = model.params().zero_grads();
        // Kept across steps, as the trainer does, so steps reuse its buffers.
        let mut tape = Tape::new(par);
        tape.set_precision(precision);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let steps: Vec<Step> = (0..23).map(|_| Step::new(&mut rng)).collect();
        // The figure means nothing if the step diverges: check the warm-up steps' losses first.
        for (i, step) in steps.iter().take(3).enumerate() {
            let loss = model
                .train_step_with(&mut tape, &step.batch(), &mut grads, &mut opt, par)
                .unwrap();
            eprintln!("warm-up step {i}: loss {loss}");
            assert!(loss.is_finite(), "W1 step {i} diverged: loss {loss}");
        }
        W1 {
            model,
            opt,
            grads,
            tape,
            steps,
            par,
            next: 3,
        }
    }

    /// The next pre-made step, cycling.
    pub fn take_step(&mut self) -> usize {
        let i = self.next;
        self.next = (self.next + 1) % self.steps.len();
        i
    }
}
