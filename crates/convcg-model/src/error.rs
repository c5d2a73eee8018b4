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
}

/// The model crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
