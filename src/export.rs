//! `convcg export RUN_DIR --format safetensors`: a trained run's tower weights in the
//! safetensors format (which PyTorch, JAX and numpy read through Hugging Face's `safetensors`
//! package), and beside them a JSON description of the towers (the model's shape settings, each
//! tower's input features, every tensor's name and shape), so that a model trained here can be
//! loaded elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::Serialize;

use convcg_model::{FeatureTables, ModelConfig};

use crate::checkpoint::{Checkpoint, MODEL_FILE};
use crate::config::RunConfig;
use crate::output::write_atomic;

/// The weights file `export` writes.
pub const WEIGHTS_FILE: &str = "towers.safetensors";

/// The description `export` writes beside it.
pub const DESCRIPTION_FILE: &str = "towers.json";

/// The version of the description's layout (its `format` key).
pub const DESCRIPTION_FORMAT: &str = "convcg-towers/1";

/// What [`export_run`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Exported {
    /// The safetensors file.
    pub weights: PathBuf,
    /// The JSON description.
    pub description: PathBuf,
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of the weights file.
    pub bytes: usize,
}

/// The contents of `towers.json`.
#[derive(Debug, Serialize)]
struct Description<'a> {
    /// [`DESCRIPTION_FORMAT`].
    format: &'static str,
    /// The weights file beside this one.
    weights: &'static str,
    /// The model's settings (`[model]`: tower widths, cross layers, heads, temperature).
    model: &'a ModelConfig,
    /// The query tower's inputs: id tables (row 0 of each is the out-of-vocabulary row), bags
    /// of ids, dense columns, identity-code width.
    query_features: &'a FeatureTables,
    /// The pin tower's inputs.
    pin_features: &'a FeatureTables,
    /// Every tensor, in the file's order: dense parameters (`kind` `dense`, `[rows, cols]`,
    /// applied as `x · W`) and embedding tables (`kind` `embedding`, `[rows, dim]`).
    tensors: Vec<TensorEntry>,
    /// How the towers' outputs are used.
    notes: &'static str,
}

#[derive(Debug, Serialize)]
struct TensorEntry {
    name: String,
    kind: &'static str,
    shape: [usize; 2],
}

/// Writes `run_dir/model.ckpt`'s weights as [`WEIGHTS_FILE`] (float32, little-endian, one
/// tensor per parameter, named as the checkpoint names it) and [`DESCRIPTION_FILE`] into `out`
/// (created if missing), each atomically.
///
/// # Errors
/// If the model cannot be read, or a file cannot be written.
pub fn export_run(run_dir: &Path, out: &Path) -> Result<Exported> {
    let path = run_dir.join(MODEL_FILE);
    let ckpt = Checkpoint::read(&path)
        .with_context(|| format!("cannot export {}: is it a finished run?", run_dir.display()))?;
    let cfg = RunConfig::from_toml(&ckpt.config_toml)
        .with_context(|| format!("in the config saved in {}", path.display()))?;
    let params = &ckpt.params;
    // Every tensor as (name, kind, shape, little-endian bytes).
    let mut tensors: Vec<(String, &'static str, [usize; 2], Vec<u8>)> = Vec::new();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for p in params.dense_params() {
        tensors.push((p.name.clone(), "dense", [p.rows, p.cols], le(&p.value)));
    }
    for t in params.tables() {
        tensors.push((t.name.clone(), "embedding", [t.rows, t.dim], le(&t.value)));
    }
    let views = tensors
        .iter()
        .map(|(name, _, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.to_vec(), bytes)
                .map(|v| (name.clone(), v))
                .with_context(|| format!("tensor {name}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_owned(), DESCRIPTION_FORMAT.to_owned())]);
    let bytes = safetensors::serialize(views, Some(metadata))
        .context("cannot serialise the weights as safetensors")?;
    let description = Description {
        format: DESCRIPTION_FORMAT,
        weights: WEIGHTS_FILE,
        model: &cfg.model,
        query_features: &ckpt.query_tables,
        pin_features: &ckpt.pin_tables,
        tensors: tensors
            .iter()
            .map(|(name, kind, shape, _)| TensorEntry {
                name: name.clone(),
                kind,
                shape: *shape,
            })
            .collect(),
        notes: "Each tower maps its features to an L2-normalised embedding of width model.out_dim; a pin's score for a query is the dot product of the two, divided by model.temperature in training.",
    };
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the export directory {}", out.display()))?;
    let weights = out.join(WEIGHTS_FILE);
    write_atomic(&weights, &bytes)?;
    let description_path = out.join(DESCRIPTION_FILE);
    write_atomic(
        &description_path,
        serde_json::to_string_pretty(&description)?.as_bytes(),
    )?;
    Ok(Exported {
        weights,
        description: description_path,
        tensors: tensors.len(),
        bytes: bytes.len(),
    })
}
