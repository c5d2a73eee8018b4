//! Gathering rows across the ranks of a data-parallel step: every rank's candidate embeddings
//! become the global batch's, and their gradients go back to the rank that made them.

use std::sync::Arc;

use super::Node;
use crate::collective::{Collective, SegmentLayout};
use crate::params::ParamStore;
use crate::tape::{Backward, Tape, Value, ValueId};

/// The global rows gathered from every rank's `x`, in the order of `layout`.
#[derive(Debug)]
pub(in crate::tape) struct GatherRows {
    x: ValueId,
    comm: Arc<dyn Collective>,
    layout: SegmentLayout,
}

impl Tape {
    /// Every rank's rows of `x`, laid out by `layout` (see [`SegmentLayout`]): each rank calls
    /// it with its own rows, and gets the same global value. Backward sums the global value's
    /// gradient over the ranks (every rank's rows contributed to it) and keeps this rank's rows.
    ///
    /// # Panics
    /// If `x` does not hold this rank's rows of `layout`.
    #[track_caller]
    pub fn gather_rows(
        &mut self,
        x: ValueId,
        comm: &Arc<dyn Collective>,
        layout: &SegmentLayout,
    ) -> ValueId {
        let (n, d) = self.shape(x);
        assert_eq!(
            n,
            layout.rank_rows(comm.rank()),
            "gather_rows: the value's rows are not this rank's rows of the layout"
        );
        let gathered = comm.all_gather(self.data(x));
        let out = layout.arrange(&gathered.data, d);
        let needs_grad = self.values[x.0].needs_grad;
        let op = GatherRows {
            x,
            comm: Arc::clone(comm),
            layout: layout.clone(),
        };
        self.push(out, layout.rows(), d, needs_grad, op)
    }
}

impl Node for GatherRows {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        // Every rank runs this backward (the ranks' tapes are the same ops), so the sum is
        // called by all of them even where a rank's own rows need no gradient.
        self.comm.all_reduce_sum(dy);
        let rank = self.comm.rank();
        let mut own = cx.tape.scratch(self.layout.rank_rows(rank) * y.cols);
        self.layout.own_rows(dy, rank, y.cols, &mut own);
        cx.slots.accumulate(self.x, own);
    }

    fn label(&self, _params: &ParamStore) -> String {
        format!("gather_rows over {} ranks", self.comm.size())
    }
}
