//! Model inputs: table sizes and the feature-major id columns the towers read.

use ndarray::Array2;

/// One embedding table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableSpec {
    /// The feature's name.
    pub name: String,
    /// Rows, including the out-of-vocabulary row 0.
    pub rows: usize,
    /// For a query bag whose ids are rows of a pin feature's table (the same vocabulary, the
    /// same out-of-vocabulary row 0): that pin feature's name, so that a model can read the
    /// bag from the pin tower's table instead of a table of its own.
    pub pin_table: Option<String>,
}

/// Every table and dense width of the two towers, in the order of the feature columns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSchema {
    /// One id per query: `user_id`, `surface`, `context_pin`, `context_category`, `query_id`.
    pub query_sparse: Vec<TableSpec>,
    /// Bags of ids per query: `recent_categories`, `recent_advertisers`, and `recent_pins`
    /// (rows of the pin tower's `pin_id` table).
    pub query_bags: Vec<TableSpec>,
    /// Dense floats per query: the user's standardised `f_*` columns, then the mean identity
    /// code of the recent-pins bag.
    pub query_dense: usize,
    /// One id per pin: `pin_id`, `advertiser`, `category`, `brand`, `price_bucket`.
    pub pin_sparse: Vec<TableSpec>,
    /// Dense floats per pin: the pin's standardised `f_*` columns, then its identity code.
    pub pin_dense: usize,
    /// Width of the identity codes that end both towers' dense columns (0: none).
    pub id_code_dim: usize,
}

/// A bag feature of n rows: bag i = `ids[offsets[i]..offsets[i + 1]]`, `offsets.len() == n + 1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bag {
    /// Table rows, all bags one after the other.
    pub ids: Vec<u32>,
    /// Where each bag starts; the last entry is `ids.len()`.
    pub offsets: Vec<usize>,
}

impl Bag {
    /// Bags.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there are no bags.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bag `i`.
    pub fn get(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// Features of n queries (user towers' inputs). `sparse[f]` has n table rows for query_sparse
/// feature f (feature-major so a kernel reads one contiguous column); `bags[b]` is the b-th bag feature.
#[derive(Clone, Debug, PartialEq)]
pub struct QueryFeatures {
    /// One column of n table rows per sparse feature.
    pub sparse: Vec<Vec<u32>>,
    /// One bag column per bag feature.
    pub bags: Vec<Bag>,
    /// n x query_dense.
    pub dense: Array2<f32>,
}

impl QueryFeatures {
    /// Queries.
    pub fn len(&self) -> usize {
        self.dense.nrows()
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Features of pins (pin towers' inputs), same layout as [`QueryFeatures`].
#[derive(Clone, Debug, PartialEq)]
pub struct PinFeatures {
    /// One column of table rows per pin sparse feature.
    pub sparse: Vec<Vec<u32>>,
    /// pins x pin_dense.
    pub dense: Array2<f32>,
}

impl PinFeatures {
    /// Pins.
    pub fn len(&self) -> usize {
        self.dense.nrows()
    }

    /// Whether there are no pins.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The features of these pins (indices into `self`), in that order.
    ///
    /// # Panics
    /// If an index is out of range.
    #[track_caller]
    pub fn select(&self, pins: &[u32]) -> PinFeatures {
        let idx: Vec<usize> = pins.iter().map(|&p| p as usize).collect();
        PinFeatures {
            sparse: self
                .sparse
                .iter()
                .map(|col| idx.iter().map(|&i| col[i]).collect())
                .collect(),
            dense: self.dense.select(ndarray::Axis(0), &idx),
        }
    }
}
