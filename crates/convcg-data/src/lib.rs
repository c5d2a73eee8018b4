//! Event data for convcg: the canonical event schema, a seeded synthetic marketplace with its
//! ground truth, and everything between an event log and a training batch.
//!
//! * [`EventLog`] holds the tables of the canonical schema (docs/design.md) ([`PinRecord`],
//!   [`UserRecord`], [`Impression`], [`Engagement`], [`Conversion`]).
//! * [`Marketplace::generate`] makes a synthetic log from a [`SynthConfig`] and a seed, with the
//!   [`GroundTruth`] behind it (true click and conversion probabilities) and every true
//!   conversion; [`Marketplace::realised`] measures it against docs/design.md, Targets.
//! * [`Dataset::build`] turns any [`EventLog`] into dictionaries (built from the training window
//!   only, row 0 for anything unseen), pin features, labelled [`Example`]s (engaged or converted
//!   training impressions with both task labels, weights and hard negatives), a time split and
//!   [`EvalQueries`]; [`Dataset::batch`] and
//!   [`Dataset::query_features`] make the towers' inputs, with history bags that only hold
//!   engagements strictly before each query's time.
//! * [`label`] runs the training-data rules (attribution, maturity, dual labels and weights,
//!   hard negatives, log q) on any log with a cutoff; [`batches`] shuffles its positives into
//!   columnar batches.
//! * [`Batcher`] yields seeded, shuffled, full batches of example indices.
//!
//! Reading and writing logs on disk, and importing the real public logs, need arrow, parquet
//! and csv; they sit behind cargo features, both on by default, so that a crate that wants
//! labels and batches alone can leave them out (`default-features = false`):
//!
//! * `io`: [`io::read_log`] and [`io::write_log`] (Parquet and CSV in the canonical schema), and
//!   [`pipeline::run_pipeline`], W3: a log on disk to every shuffled batch, timed and counted.
//! * `import` (with `io`): [`import::import`] turns the real public logs (taobao, tmall,
//!   trivago) into an [`EventLog`].
//!
//! A third feature, `testing`, off by default and turned on by dev-dependencies, adds
//! `testing`: the helpers the workspace's tests share (finding the shared real-data folder,
//! correlations).
//!
//! ```
//! use convcg_data::{Batcher, Dataset, DatasetConfig, Marketplace, SynthConfig, Task};
//!
//! let cfg = SynthConfig {
//!     num_users: 300,
//!     num_pins: 400,
//!     num_advertisers: 40,
//!     num_categories: 10,
//!     num_brands: 50,
//!     num_queries: 20,
//!     impressions: 30_000,
//!     ..SynthConfig::default()
//! };
//! let market = Marketplace::generate(&cfg, 7, &|_, _| {})?;
//! let data = Dataset::build(&market.log, Some(&market.true_conversions), &DatasetConfig::default())?;
//! let mut batcher = Batcher::new(data.train().len(), 64, 1)?;
//! let batch = data.batch(batcher.next_batch(), &mut data.log_q_estimator()?);
//! assert_eq!(batch.pins.len(), 64);
//! assert_eq!(batch.hard_negatives.len(), 64 * data.hard_negatives_per_positive());
//! assert_eq!(batch.query.sparse.len(), data.schema().query_sparse.len());
//! assert!(data.pin_counts(Task::Engagement).iter().sum::<f32>() > 0.0);
//! # Ok::<(), convcg_data::Error>(())
//! ```
#![deny(missing_docs)]
// Library code returns errors; `unwrap` and `expect` only in tests.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
#![forbid(unsafe_code)]

mod batcher;
mod dataset;
mod error;
mod features;
mod hash;
#[cfg(feature = "import")]
pub mod import;
#[cfg(feature = "io")]
pub mod io;
mod labels;
#[cfg(feature = "io")]
pub mod pipeline;
mod schema;
mod stats_table;
mod synth;
#[cfg(feature = "testing")]
pub mod testing;
mod truth;

pub use batcher::{Batcher, BatcherState, RngState};
pub use dataset::{
    Batch, ColdStart, Dataset, DatasetConfig, DatasetStats, EvalProtocol, EvalQueries, EvalSet,
    Example, FeatureState, HardNegatives, LogQEstimator, LogQState, QueryKey, QueryRequest, Task,
};
pub use error::{Error, ExpectedNames, Location, Result};
pub use features::{Bag, FeatureSchema, PinFeatures, QueryFeatures, TableSpec};
pub use labels::{
    Attribution, CONVERTED_LABEL, ClickWeight, ConversionKindWeights, HardNegativeSlots,
    LabelConfig, LabelStats, Labelled, LabelledBatch, LogQMode, MASKED_LABEL, MAX_HARD_NEGATIVES,
    NOT_CONVERTED_LABEL, StreamingCell, StreamingConfig, StreamingFrequency, StreamingState, Touch,
    ValueWeighting, batches, engagement_impressions, label, uniform_log_q, uniform_negatives,
};
pub use schema::{
    CategoricalColumn, Conversion, ConversionKind, Engagement, EngagementKind, EventLog,
    Impression, Impressions, OnBadRow, PinRecord, Surface, UserRecord, stable_string_id,
};
pub use synth::{Marketplace, RealisedProperties, SynthConfig};
pub use truth::GroundTruth;
