//! What the ops' tests share: a step that puts a loss on a built value and runs the backward,
//! and a comparison of two steps' outcomes.

use convcg_kernels::{Par, SoftmaxArgs};

use super::{Tape, ValueId};
use crate::params::ParamStore;

/// Asserts that `a` and `b` agree within `1e-5` relative.
pub(super) fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what}: {x} vs {y}"
        );
    }
}

/// What a test step leaves: the loss, every dense gradient, every table's gradient rows,
/// and the `[5, 6]` value the loss was put on.
#[derive(Debug)]
pub(super) struct Outcome {
    pub(super) loss: f32,
    pub(super) dense: Vec<Vec<f32>>,
    pub(super) tables: Vec<Vec<f32>>,
    pub(super) output: Vec<f32>,
}

impl Outcome {
    /// Asserts the same loss and gradients as `reference`, within [`close`].
    pub(super) fn assert_matches(&self, reference: &Outcome) {
        assert_eq!(self.dense.len(), reference.dense.len());
        assert_eq!(self.tables.len(), reference.tables.len());
        close(&[self.loss], &[reference.loss], "loss");
        for (i, (g, r)) in self.dense.iter().zip(&reference.dense).enumerate() {
            close(g, r, &format!("dense gradient {i}"));
        }
        for (i, (g, r)) in self.tables.iter().zip(&reference.tables).enumerate() {
            close(g, r, &format!("table gradient {i}"));
        }
    }
}

/// Records `build`'s `[5, 6]` output on a fresh tape with `par`, puts the sampled softmax
/// loss on it against seven fixed candidates, and runs the backward.
pub(super) fn step(
    params: &ParamStore,
    par: Par,
    build: impl FnOnce(&mut Tape) -> ValueId,
) -> Outcome {
    let outcome = step_on(&mut Tape::new(par), params, build);
    assert_eq!(outcome.output.len(), 5 * 6);
    outcome
}

/// [`step`] on `tape`, reset first, for an output of any width.
pub(super) fn step_on(
    tape: &mut Tape,
    params: &ParamStore,
    build: impl FnOnce(&mut Tape) -> ValueId,
) -> Outcome {
    tape.reset(tape.par);
    let y = build(tape);
    let width = tape.shape(y).1;
    let cands: Vec<f32> = (0..7 * width)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 7.0)
        .collect();
    let cand_ids: Vec<u32> = (0..7).collect();
    let c = tape.input(&cands, 7, width);
    let args = SoftmaxArgs {
        inv_temp: 2.0,
        log_q: None,
        cand_ids: &cand_ids,
        weights: None,
        first_positive: 0,
    };
    let loss = tape.softmax_xent(y, c, args);
    let mut grads = params.zero_grads();
    tape.backward(loss, params, &mut grads);
    Outcome {
        loss: tape.scalar(loss),
        dense: grads.dense_all().to_vec(),
        tables: grads
            .tables_all()
            .iter()
            .map(|t| t.values().to_vec())
            .collect(),
        output: tape.data(y).to_vec(),
    }
}

/// The five ids every test step gathers.
pub(super) const IDS: [u32; 5] = [4, 0, 8, 4, 2];
