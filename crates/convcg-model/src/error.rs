use thiserror::Error;

/// Errors of the model crate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its allowed range.
    #[error("invalid model config: `{key}` = {value}: {allowed}")]
    Config {
        /// The config key, dotted from the model section.
        key: String,
        /// The offending value, as written.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A batch does not match the tower it is fed to.
    #[error("batch does not match the {tower} tower: {what}")]
    Input {
        /// `query` or `pin`.
        tower: &'static str,
        /// What differs.
        what: String,
    },
    /// A training step met a NaN or an infinity. Checked before the optimiser runs for the loss
    /// and the gradients (the parameters are then untouched, so the step may be skipped), and
    /// after it for the parameters it updated.
    #[error("non-finite value in {what}")]
    NonFinite {
        /// Where: `the loss`, `the gradient of PARAM` or `parameter PARAM` (after the update).
        what: String,
        /// Whether the parameters are still as they were before the step.
        parameters_untouched: bool,
    },
    /// Saved state (parameters or optimiser moments, e.g. from a checkpoint) does not fit the
    /// model it is loaded into.
    #[error("saved state does not fit the model: {what}")]
    StateMismatch {
        /// What differs, naming the parameter and both shapes.
        what: String,
    },
}

/// The model crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
