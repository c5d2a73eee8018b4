//! Saved state (parameters and optimiser moments) restores exactly, and state that does not fit
//! the model is refused with the parameter and both shapes named.

use convcg_model::{
    DenseParam, Error, FeatureTables, ModelConfig, OptimConfig, Optimizer, ParamStore, TableDef,
    TwoTowerModel,
};

fn model(rows: usize, seed: u64) -> TwoTowerModel {
    let tables = FeatureTables {
        sparse: vec![TableDef::new("id", rows)],
        bags: vec![],
        dense: 3,
        id_code: 0,
    };
    TwoTowerModel::new(&ModelConfig::default(), &tables, &tables, seed).expect("valid")
}

#[test]
fn assign_from_copies_every_value_and_refuses_other_shapes() {
    let mut a = model(10, 1);
    let b = model(10, 2);
    assert_ne!(a.params(), b.params());
    a.params_mut().assign_from(b.params()).expect("same shapes");
    assert_eq!(a.params(), b.params());

    let before = a.params().clone();
    let err = a
        .params_mut()
        .assign_from(model(11, 2).params())
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::StateMismatch { .. }), "{msg}");
    assert!(
        msg.contains("[10, 16]") && msg.contains("[11, 16]"),
        "{msg}"
    );
    assert_eq!(a.params(), &before, "nothing copied on error");
}

#[test]
fn from_parts_checks_value_lengths() {
    let bad = DenseParam {
        name: "w".into(),
        rows: 2,
        cols: 3,
        value: vec![0.0; 5],
    };
    let msg = ParamStore::from_parts(vec![bad], vec![])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("`w`") && msg.contains("[2, 3]") && msg.contains('5'),
        "{msg}"
    );
}

#[test]
fn optimizer_state_round_trips_and_is_checked_against_the_params() {
    let m = model(10, 3);
    let cfg = OptimConfig::default();
    let mut state = Optimizer::new(&cfg, m.params()).expect("valid").state();
    state.step = 7;
    state.m[0][0] = 0.5;
    state.row_state[0][3] = 2.0;
    let restored = Optimizer::from_state(&cfg, m.params(), state.clone()).expect("fits");
    assert_eq!(restored.state(), state);
    assert_eq!(restored.step_count(), 7);

    let mut short = state.clone();
    short.v[1].pop();
    let msg = Optimizer::from_state(&cfg, m.params(), short)
        .unwrap_err()
        .to_string();
    let name = &m.params().dense_params()[1].name;
    assert!(
        msg.contains("second moment") && msg.contains(name.as_str()),
        "{msg}"
    );

    let mut missing = state;
    missing.row_state.pop();
    let msg = Optimizer::from_state(&cfg, m.params(), missing)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("Adagrad"), "{msg}");
}
