//! Parameters: dense weight matrices and embedding tables, with their gradients.

use convcg_kernels::SparseRowGrad;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::collective::Collective;
use crate::error::{Error, Result};

/// Handle of a dense parameter in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub(crate) usize);

/// Handle of an embedding table in a [`ParamStore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TableId(pub(crate) usize);

/// A dense parameter: a `[rows, cols]` row-major matrix (a bias is `[1, cols]`).
#[derive(Clone, Debug, PartialEq)]
pub struct DenseParam {
    /// Dotted name, e.g. `query.cross.0.w`.
    pub name: String,
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Row-major values.
    pub value: Vec<f32>,
}

/// An embedding table: `[rows, dim]` row-major, row 0 being the out-of-vocabulary row.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingTable {
    /// Dotted name, e.g. `pin.emb.category`.
    pub name: String,
    /// Rows, the out-of-vocabulary row included.
    pub rows: usize,
    /// Embedding width.
    pub dim: usize,
    /// Row-major values.
    pub value: Vec<f32>,
}

/// Every trainable parameter of a model.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamStore {
    dense: Vec<DenseParam>,
    tables: Vec<EmbeddingTable>,
}

impl ParamStore {
    /// Bytes of parameter values: dense weights and embedding tables.
    pub fn bytes(&self) -> usize {
        let dense: usize = self.dense_params().iter().map(|p| p.value.len()).sum();
        let tables: usize = self.tables().iter().map(|t| t.value.len()).sum();
        (dense + tables) * std::mem::size_of::<f32>()
    }

    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a dense parameter initialised U(-bound, bound), PyTorch's `Linear` default when
    /// `bound = 1/sqrt(fan_in)`.
    pub fn add_dense(
        &mut self,
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        bound: f32,
        rng: &mut ChaCha8Rng,
    ) -> ParamId {
        let value = (0..rows * cols)
            .map(|_| rng.random_range(-bound..=bound))
            .collect();
        self.dense.push(DenseParam {
            name: name.into(),
            rows,
            cols,
            value,
        });
        ParamId(self.dense.len() - 1)
    }

    /// Adds an embedding table initialised U(-1/sqrt(rows), 1/sqrt(rows)), TorchRec's default.
    pub fn add_table(
        &mut self,
        name: impl Into<String>,
        rows: usize,
        dim: usize,
        rng: &mut ChaCha8Rng,
    ) -> TableId {
        let bound = 1.0 / (rows.max(1) as f32).sqrt();
        let value = (0..rows * dim)
            .map(|_| rng.random_range(-bound..=bound))
            .collect();
        self.tables.push(EmbeddingTable {
            name: name.into(),
            rows,
            dim,
            value,
        });
        TableId(self.tables.len() - 1)
    }

    /// The table named `name`, if there is one.
    pub fn table_id(&self, name: &str) -> Option<TableId> {
        self.tables.iter().position(|t| t.name == name).map(TableId)
    }

    /// The dense parameter behind a handle.
    pub fn dense(&self, id: ParamId) -> &DenseParam {
        &self.dense[id.0]
    }

    /// The embedding table behind a handle.
    pub fn table(&self, id: TableId) -> &EmbeddingTable {
        &self.tables[id.0]
    }

    /// All dense parameters, in creation order.
    pub fn dense_params(&self) -> &[DenseParam] {
        &self.dense
    }

    /// All embedding tables, in creation order.
    pub fn tables(&self) -> &[EmbeddingTable] {
        &self.tables
    }

    /// Every parameter value: the dense parameters in order, then the tables, row-major (to
    /// compare two models value by value).
    pub fn values(&self) -> impl Iterator<Item = f32> + '_ {
        let dense = self.dense_params().iter().flat_map(|d| &d.value);
        dense
            .chain(self.tables().iter().flat_map(|t| &t.value))
            .copied()
    }

    /// Mutable access for optimisers and checkpoints.
    pub fn dense_params_mut(&mut self) -> &mut [DenseParam] {
        &mut self.dense
    }

    /// Mutable access for optimisers and checkpoints.
    pub fn tables_mut(&mut self) -> &mut [EmbeddingTable] {
        &mut self.tables
    }

    /// A store of these parameters (e.g. read back from a checkpoint), in this order.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] if a parameter's values are not `rows x cols` (`rows x dim`)
    /// long, naming it.
    pub fn from_parts(dense: Vec<DenseParam>, tables: Vec<EmbeddingTable>) -> Result<Self> {
        for p in &dense {
            check_len(&p.name, p.rows, p.cols, p.value.len())?;
        }
        for t in &tables {
            check_len(&t.name, t.rows, t.dim, t.value.len())?;
        }
        Ok(Self { dense, tables })
    }

    /// Copies every value of `other` into this store: the same parameters, by name, in the
    /// same order, with the same shapes. On error nothing has been copied.
    ///
    /// # Errors
    /// [`Error::StateMismatch`] naming the first parameter that is missing, extra, renamed or
    /// of another shape (with both shapes).
    pub fn assign_from(&mut self, other: &ParamStore) -> Result<()> {
        let shapes = |s: &ParamStore| -> Vec<(String, usize, usize)> {
            let dense = s.dense.iter().map(|p| (p.name.clone(), p.rows, p.cols));
            let tables = s.tables.iter().map(|t| (t.name.clone(), t.rows, t.dim));
            dense.chain(tables).collect()
        };
        let (mine, theirs) = (shapes(self), shapes(other));
        for (i, (m, t)) in mine.iter().zip(&theirs).enumerate() {
            if m != t {
                return Err(Error::StateMismatch {
                    what: format!(
                        "parameter {i} is `{}` [{}, {}] in the model but `{}` [{}, {}] in the saved state",
                        m.0, m.1, m.2, t.0, t.1, t.2
                    ),
                });
            }
        }
        if mine.len() != theirs.len() {
            let (longer, which) = if mine.len() > theirs.len() {
                (&mine, "the model")
            } else {
                (&theirs, "the saved state")
            };
            let extra = longer
                .get(mine.len().min(theirs.len()))
                .map_or("", |p| &p.0);
            return Err(Error::StateMismatch {
                what: format!(
                    "the model has {} parameters, the saved state {}; `{extra}` is only in {which}",
                    mine.len(),
                    theirs.len()
                ),
            });
        }
        if self.dense.len() != other.dense.len() {
            return Err(Error::StateMismatch {
                what: format!(
                    "the model has {} dense parameters and {} tables, the saved state {} and {}",
                    self.dense.len(),
                    self.tables.len(),
                    other.dense.len(),
                    other.tables.len()
                ),
            });
        }
        for (p, q) in self.dense.iter_mut().zip(&other.dense) {
            p.value.copy_from_slice(&q.value);
        }
        for (t, u) in self.tables.iter_mut().zip(&other.tables) {
            t.value.copy_from_slice(&u.value);
        }
        Ok(())
    }

    /// A zeroed gradient store shaped like this one.
    pub fn zero_grads(&self) -> Grads {
        Grads {
            dense: self
                .dense
                .iter()
                .map(|p| vec![0.0; p.value.len()])
                .collect(),
            tables: self
                .tables
                .iter()
                .map(|t| SparseRowGrad::new(t.rows, t.dim))
                .collect(),
        }
    }
}

fn check_len(name: &str, rows: usize, cols: usize, len: usize) -> Result<()> {
    if rows.checked_mul(cols) == Some(len) {
        Ok(())
    } else {
        Err(Error::StateMismatch {
            what: format!("`{name}` is [{rows}, {cols}] but holds {len} values"),
        })
    }
}

/// Gradients of a [`ParamStore`]: dense for weight matrices, sparse (touched rows only) for tables.
#[derive(Debug)]
pub struct Grads {
    pub(crate) dense: Vec<Vec<f32>>,
    pub(crate) tables: Vec<SparseRowGrad>,
}

impl Grads {
    /// Bytes held: dense gradients and the sparse row gradients with their slot indices.
    pub fn held_bytes(&self) -> usize {
        let dense: usize = self.dense_all().iter().map(|g| g.capacity() * 4).sum();
        dense
            + self
                .tables_all()
                .iter()
                .map(SparseRowGrad::held_bytes)
                .sum::<usize>()
    }

    /// Gradient of a dense parameter.
    pub fn dense(&self, id: ParamId) -> &[f32] {
        &self.dense[id.0]
    }

    /// Gradient of an embedding table (touched rows only).
    pub fn table(&self, id: TableId) -> &SparseRowGrad {
        &self.tables[id.0]
    }

    /// All dense gradients, parallel to [`ParamStore::dense_params`].
    pub fn dense_all(&self) -> &[Vec<f32>] {
        &self.dense
    }

    /// All table gradients, parallel to [`ParamStore::tables`].
    pub fn tables_all(&self) -> &[SparseRowGrad] {
        &self.tables
    }

    /// Zeroes every gradient, keeping the buffers.
    pub fn zero(&mut self) {
        for g in &mut self.dense {
            g.fill(0.0);
        }
        for t in &mut self.tables {
            t.clear();
        }
    }

    /// Replaces every gradient by its sum over the ranks of `comm`, the same on every rank:
    /// the dense gradients as one flat buffer through one all-reduce; the tables' touched rows
    /// through two all-gathers (every table's row ids, then their gradients), added up in rank
    /// order, so that each table ends with every row any rank touched.
    pub fn all_reduce(&mut self, comm: &dyn Collective) {
        if comm.size() == 1 {
            return;
        }
        let mut flat: Vec<f32> = self.dense.concat();
        comm.all_reduce_sum(&mut flat);
        let mut at = 0;
        for g in &mut self.dense {
            let n = g.len();
            g.copy_from_slice(&flat[at..at + n]);
            at += n;
        }
        // Per table, its number of touched rows and then the rows.
        let mut ids = Vec::new();
        let mut values = Vec::new();
        for t in &self.tables {
            ids.push(t.len() as u32);
            ids.extend_from_slice(t.rows());
            values.extend_from_slice(t.values());
        }
        let ids = comm.all_gather_u32(&ids);
        let values = comm.all_gather(&values);
        for t in &mut self.tables {
            t.clear();
        }
        for r in 0..comm.size() {
            let (mut ids, mut values) = (ids.part(r), values.part(r));
            for t in &mut self.tables {
                let n = ids[0] as usize;
                let dim = t.dim();
                for (&row, g) in ids[1..=n].iter().zip(values.chunks_exact(dim)) {
                    t.add_row(row, g, 1.0);
                }
                (ids, values) = (&ids[n + 1..], &values[n * dim..]);
            }
        }
    }
}
