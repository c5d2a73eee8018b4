//! What the whole-model tests share: feature tables from row counts, a training batch held
//! in owned buffers, a tiny model and its batches.
// Each test crate uses part of it.
#![allow(dead_code)]

use convcg_model::{
    FeatureTables, ModelConfig, Structure, TableDef, TaskRows, TowerConfig, TowerInput, TrainBatch,
    TwoTowerModel,
};
use std::ops::Range;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Tables `{prefix}0`, `{prefix}1`, ... with the given row counts: the single-id features
/// (`sparse`), then the bags (`bags`), and `dense` dense inputs.
pub fn tables(prefix: &str, sparse: &[usize], bags: &[usize], dense: usize) -> FeatureTables {
    let def = |(i, &rows): (usize, &usize)| TableDef::new(format!("{prefix}{i}"), rows);
    FeatureTables {
        sparse: sparse.iter().enumerate().map(def).collect(),
        bags: bags.iter().enumerate().map(def).collect(),
        dense,
        id_code: 0,
    }
}

/// A training batch's inputs in owned buffers; [`OwnedBatch::batch`] lends them to the model.
/// The query tower has one bagged feature, the pin tower none.
#[derive(Clone, Debug)]
pub struct OwnedBatch {
    /// The query tower's single-id features, one id per row each.
    pub q_sparse: Vec<Vec<u32>>,
    /// The query tower's bagged feature: ids, and each row's offsets into them.
    pub q_bag: (Vec<u32>, Vec<usize>),
    /// The query tower's dense inputs, row-major.
    pub q_dense: Vec<f32>,
    /// The pin tower's single-id features, one id per candidate each.
    pub p_sparse: Vec<Vec<u32>>,
    /// The pin tower's dense inputs, row-major.
    pub p_dense: Vec<f32>,
    /// Each candidate's pin id, which finds the accidental hits.
    pub pin_ids: Vec<u32>,
    /// Each candidate's sampling log-probability.
    pub log_q: Vec<f32>,
    /// The engagement task's weight of each row; the task weighs 1 in the loss.
    pub weights: Vec<f32>,
    /// The conversion task's weight of each row and the task's weight in the loss, where the
    /// batch has the task.
    pub conversion: Option<(Vec<f32>, f32)>,
    /// Each candidate's advertiser, where the batch names them.
    pub advertisers: Option<Vec<u32>>,
}

impl OwnedBatch {
    /// The query tower's input: one row per engagement weight.
    pub fn query(&self) -> TowerInput<'_> {
        TowerInput {
            n: self.weights.len(),
            sparse: self.q_sparse.iter().map(Vec::as_slice).collect(),
            bags: vec![(&self.q_bag.0, &self.q_bag.1)],
            dense: &self.q_dense,
        }
    }

    /// The pin tower's input: one row per candidate.
    pub fn pins(&self) -> TowerInput<'_> {
        TowerInput {
            n: self.pin_ids.len(),
            sparse: self.p_sparse.iter().map(Vec::as_slice).collect(),
            bags: vec![],
            dense: &self.p_dense,
        }
    }

    /// The rows `rows` of this batch with their positives, and its extra candidates (those
    /// past the positives) `extras`: one rank's part of a data-parallel step, its candidates
    /// in two segments (positives, extras).
    pub fn part(&self, rows: Range<usize>, extras: Range<usize>) -> OwnedBatch {
        let n = self.weights.len();
        let (qw, pw) = (
            self.q_dense.len() / n,
            self.p_dense.len() / self.pin_ids.len(),
        );
        let cands: Vec<usize> = rows
            .clone()
            .chain(extras.start + n..extras.end + n)
            .collect();
        let pick = |v: &[u32]| cands.iter().map(|&c| v[c]).collect::<Vec<u32>>();
        let (bag, offsets) = &self.q_bag;
        let mut part_offsets = vec![0];
        let mut part_bag = Vec::new();
        for i in rows.clone() {
            part_bag.extend_from_slice(&bag[offsets[i]..offsets[i + 1]]);
            part_offsets.push(part_bag.len());
        }
        OwnedBatch {
            q_sparse: self
                .q_sparse
                .iter()
                .map(|f| f[rows.clone()].to_vec())
                .collect(),
            q_bag: (part_bag, part_offsets),
            q_dense: self.q_dense[rows.start * qw..rows.end * qw].to_vec(),
            p_sparse: self.p_sparse.iter().map(|f| pick(f)).collect(),
            p_dense: cands
                .iter()
                .flat_map(|&c| self.p_dense[c * pw..(c + 1) * pw].iter().copied())
                .collect(),
            pin_ids: pick(&self.pin_ids),
            log_q: cands.iter().map(|&c| self.log_q[c]).collect(),
            weights: self.weights[rows.clone()].to_vec(),
            conversion: self
                .conversion
                .as_ref()
                .map(|(w, t)| (w[rows.clone()].to_vec(), *t)),
            advertisers: self.advertisers.as_ref().map(|a| pick(a)),
        }
    }

    /// The batch, borrowing these buffers.
    pub fn batch(&self) -> TrainBatch<'_> {
        TrainBatch {
            query: self.query(),
            pins: self.pins(),
            pin_ids: &self.pin_ids,
            log_q: &self.log_q,
            engagement: Some(TaskRows {
                weights: &self.weights,
                task_weight: 1.0,
            }),
            conversion: self
                .conversion
                .as_ref()
                .map(|(weights, task_weight)| TaskRows {
                    weights,
                    task_weight: *task_weight,
                }),
            advertisers: self.advertisers.as_deref(),
        }
    }
}

/// The advertisers of a tiny batch's pins: three advertisers share the pins.
pub fn advertisers_of(pins: &[u32]) -> Vec<u32> {
    pins.iter().map(|&pin| pin % 3).collect()
}

/// A batch of `n` rows and their `n` positives, ids repeating so that accidental hits occur.
pub fn tiny_batch(rng: &mut ChaCha8Rng, n: usize) -> OwnedBatch {
    let mut offsets = vec![0];
    let mut bag = Vec::new();
    for i in 0..n {
        for _ in 0..(i % 3) {
            bag.push(rng.random_range(0..4));
        }
        offsets.push(bag.len());
    }
    // Pin ids repeat so that accidental-hit masking is exercised.
    let pin_ids: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
    OwnedBatch {
        q_sparse: vec![(0..n).map(|_| rng.random_range(0..5)).collect()],
        q_bag: (bag, offsets),
        q_dense: (0..n * 3).map(|_| rng.random_range(-1.0..1.0)).collect(),
        p_sparse: vec![
            pin_ids.clone(),
            (0..n).map(|_| rng.random_range(0..3)).collect(),
        ],
        p_dense: (0..n * 2).map(|_| rng.random_range(-1.0..1.0)).collect(),
        log_q: (0..n).map(|_| rng.random_range(-3.0..-1.0)).collect(),
        weights: (0..n).map(|i| 0.5 + (i % 2) as f32).collect(),
        // Conversion weights (0 on most rows), for the conversion task and the advertiser loss.
        conversion: Some((
            (0..n).map(|i| if i % 3 == 1 { 1.5 } else { 0.0 }).collect(),
            0.7,
        )),
        advertisers: Some(advertisers_of(&pin_ids)),
        pin_ids,
    }
}

/// A tiny model of the given structure.
pub fn tiny_config(structure: Structure) -> ModelConfig {
    let tower = TowerConfig {
        embedding_dim: 3,
        cross_layers: 2,
        mlp: vec![5, 4],
        structure,
        ..TowerConfig::default()
    };
    ModelConfig {
        query: tower.clone(),
        pin: tower,
        out_dim: 4,
        temperature: 0.5,
        logq_correction: true,
        ..ModelConfig::default()
    }
}

/// Every parameter's bits, dense then tables.
pub fn param_bits(model: &TwoTowerModel) -> Vec<u32> {
    model.params().values().map(f32::to_bits).collect()
}
