//! Pooling rows by group (the advertiser-level loss's advertiser embeddings).

use convcg_kernels::{self as k, RowsMut};

use super::Node;
use crate::params::ParamStore;
use crate::tape::pool::{Pools, capacity_bytes};
use crate::tape::{Backward, Tape, Value, ValueId};

/// The mean of `x`'s rows by group, saving each row's group and each group's row count.
#[derive(Debug)]
pub(in crate::tape) struct SegmentMean {
    x: ValueId,
    groups: Vec<u32>,
    counts: Vec<u32>,
}

impl Tape {
    /// The mean of the rows of `x` in each of `n_groups` groups, `groups[r]` being row `r`'s
    /// group; rows with a group `>= n_groups` are left out, and an empty group is zeros.
    ///
    /// # Panics
    /// If `groups` does not have one entry per row of `x`.
    #[track_caller]
    pub fn segment_mean(&mut self, x: ValueId, groups: &[u32], n_groups: usize) -> ValueId {
        let (n, d) = self.shape(x);
        assert_eq!(groups.len(), n, "segment_mean: one group per row");
        let mut out = self.scratch(n_groups * d);
        let mut counts = self.pools().ids.take_stale(n_groups);
        let dst = RowsMut::new(&mut out, n_groups, d);
        k::segment_mean_forward(dst, &mut counts, self.view(x), groups);
        let groups = self.pools().ids.copy_of(groups);
        let needs_grad = self.values[x.0].needs_grad;
        let op = SegmentMean { x, groups, counts };
        self.push(out, n_groups, d, needs_grad, op)
    }
}

impl Node for SegmentMean {
    fn backward(&self, y: &Value, dy: &mut [f32], cx: &mut Backward<'_>) {
        if let Some(dx) = cx.slots.out(self.x) {
            k::segment_mean_backward(dx, y.shaped(dy), &self.groups, &self.counts);
        }
    }

    fn label(&self, _params: &ParamStore) -> String {
        "segment_mean".to_owned()
    }

    fn saved_bytes(&self) -> usize {
        capacity_bytes(&self.groups) + capacity_bytes(&self.counts)
    }

    fn recycle(self, pools: &mut Pools) {
        pools.ids.give(self.groups);
        pools.ids.give(self.counts);
    }
}
