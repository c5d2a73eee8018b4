//! What the whole-model tests share: feature tables from row counts, and a training batch held
//! in owned buffers.

use convcg_model::{FeatureTables, TableDef, TaskRows, TowerInput, TrainBatch};

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
