use std::fmt;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of its allowed range.
    #[error("invalid config key `{key}`: {message}")]
    InvalidConfig {
        /// The offending key, as spelled in the config file.
        key: &'static str,
        /// What is allowed, and what was given.
        message: String,
    },
    /// A function argument is out of its allowed range.
    #[error("invalid argument `{name}`: {message}")]
    InvalidArgument {
        /// The argument's name.
        name: &'static str,
        /// What is allowed, and what was given.
        message: String,
    },
    /// A value in an event log table is unusable.
    #[error("{table} row {row}, column `{column}`: {message}")]
    InvalidLog {
        /// The table (`pins`, `users`, `impressions`, ...).
        table: &'static str,
        /// Zero-based row in that table.
        row: usize,
        /// The column.
        column: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A required table of the event log has no rows.
    #[error("the event log's `{table}` table is empty")]
    EmptyTable {
        /// The table.
        table: &'static str,
    },
    /// A string is not one of an enumeration's names.
    #[error("unknown {what} `{value}` (expected one of: {expected})")]
    UnknownName {
        /// What was being parsed (`surface`, `engagement kind`, ...).
        what: &'static str,
        /// The string that was given.
        value: String,
        /// The accepted names.
        expected: ExpectedNames,
    },
}

/// The accepted names of an enumeration, for [`Error::UnknownName`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpectedNames(pub &'static [&'static str]);

impl fmt::Display for ExpectedNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// This crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn config_error(key: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        key,
        message: message.into(),
    }
}
