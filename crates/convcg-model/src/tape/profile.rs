//! Per-node wall times of a recorded step ([`Tape::set_profiling`](super::Tape::set_profiling)).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Wall time of one recorded node, from [`Tape::profile`](super::Tape::profile).
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTiming {
    /// The node's position on the tape: the same for the same ops recorded in the same order,
    /// so timings of several steps line up by it.
    pub node: usize,
    /// What the node is: the op, and the parameter or table it reads where it has one
    /// (`linear query.head.w`, `gather pin.id`).
    pub label: String,
    /// The node's output shape `(rows, cols)`.
    pub shape: (usize, usize),
    /// Time from the previous node's end (or the reset) to this node's end while recording, so
    /// the caller's work between ops is counted with the op that follows it.
    pub forward: Duration,
    /// Time of the node's backward, zero if the last backward did not reach it (or none ran).
    pub backward: Duration,
}

/// Per-node clocks, kept only while profiling is on.
#[derive(Debug)]
pub(super) struct Clock {
    /// End of the last recorded node, or the reset.
    mark: Instant,
    forward: Vec<Duration>,
    /// Behind a lock because [`Tape::backward`](super::Tape::backward) borrows the tape shared.
    backward: Mutex<Vec<Duration>>,
}

impl Clock {
    pub(super) fn new() -> Self {
        Self {
            mark: Instant::now(),
            forward: Vec::new(),
            backward: Mutex::new(Vec::new()),
        }
    }

    /// Ends the forward of the node being recorded.
    pub(super) fn lap(&mut self) {
        let now = Instant::now();
        self.forward.push(now - self.mark);
        self.mark = now;
    }

    /// Stores the backward time of `node` on a tape of `nodes` nodes.
    pub(super) fn set_backward(&self, node: usize, nodes: usize, time: Duration) {
        let mut times = self.backward.lock().unwrap_or_else(PoisonError::into_inner);
        if times.len() < nodes {
            times.resize(nodes, Duration::ZERO);
        }
        times[node] = time;
    }

    /// The timings of the nodes described by `nodes` (label and shape, in tape order).
    pub(super) fn timings(
        &self,
        nodes: impl Iterator<Item = (String, (usize, usize))>,
    ) -> Vec<NodeTiming> {
        let backward = self.backward.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .enumerate()
            .map(|(node, (label, shape))| NodeTiming {
                node,
                label,
                shape,
                forward: self.forward.get(node).copied().unwrap_or_default(),
                backward: backward.get(node).copied().unwrap_or_default(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use convcg_kernels::Par;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::params::ParamStore;
    use crate::tape::Tape;
    use crate::tape::testing::step_on;

    /// Profiling labels every node of the step since the last reset, times the backward of
    /// exactly the nodes it reached, and changes no result; off, the profile is empty.
    #[test]
    fn profile_times_each_node_of_the_last_step() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let mut params = ParamStore::new();
        let t = params.add_table("ids", 9, 4, &mut rng);
        let w = params.add_dense("head.w", 4, 3, 0.5, &mut rng);
        let step = |tape: &mut Tape| {
            let outcome = step_on(tape, &params, |tape| {
                let x = tape.gather(&params, t, &[1, 2, 3]);
                let y = tape.linear(&params, x, w, None);
                tape.relu(y)
            });
            (outcome.loss, outcome.dense)
        };
        let mut plain = Tape::new(Par::Seq);
        let expected = step(&mut plain);
        assert!(plain.profile(&params).is_empty());

        let mut timed = Tape::new(Par::Seq);
        timed.set_profiling(true);
        for _ in 0..2 {
            assert_eq!(step(&mut timed), expected, "profiling changed a result");
            let profile = timed.profile(&params);
            let labels: Vec<&str> = profile.iter().map(|n| n.label.as_str()).collect();
            assert_eq!(
                labels,
                [
                    "gather ids",
                    "linear head.w",
                    "relu",
                    "input",
                    "softmax_xent"
                ]
            );
            assert_eq!(profile[1].shape, (3, 3));
            assert_eq!(
                profile.iter().map(|n| n.node).collect::<Vec<_>>(),
                [0, 1, 2, 3, 4]
            );
            // The input needs no gradient, so the backward never reaches it.
            assert_eq!(profile[3].backward, Duration::ZERO);
            assert!(profile[4].forward > Duration::ZERO);
            assert!(profile[4].backward > Duration::ZERO);
        }
        timed.reset(Par::Seq);
        assert!(
            timed.profile(&params).is_empty(),
            "a reset forgets the step"
        );
        timed.set_profiling(false);
        step(&mut timed);
        assert!(timed.profile(&params).is_empty());
    }
}
