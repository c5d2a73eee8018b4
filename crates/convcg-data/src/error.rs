use std::fmt;
use std::path::PathBuf;

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
    /// A file of an event log (or a source file being imported) is malformed or holds a bad value.
    #[error("{at}: {message}")]
    BadInput {
        /// Where: the file, and the row and column where known.
        at: Location,
        /// What is wrong, and what was expected.
        message: String,
    },
    /// An operating-system error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
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

/// A place in an input file: the file, and the row and column where known. Rows count data
/// rows from 1 (a CSV header is not a row); they count across a Parquet file's row groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub file: PathBuf,
    /// The data row, from 1.
    pub row: Option<u64>,
    /// The column's name.
    pub column: Option<String>,
}

impl Location {
    /// The whole file.
    pub fn file(file: impl Into<PathBuf>) -> Location {
        Location {
            file: file.into(),
            row: None,
            column: None,
        }
    }

    /// A column of the file.
    pub fn column(file: impl Into<PathBuf>, column: impl Into<String>) -> Location {
        Location {
            column: Some(column.into()),
            ..Location::file(file)
        }
    }

    /// One cell of the file.
    pub fn cell(file: impl Into<PathBuf>, row: u64, column: impl Into<String>) -> Location {
        Location {
            row: Some(row),
            ..Location::column(file, column)
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(row) = self.row {
            write!(f, ", row {row}")?;
        }
        if let Some(column) = &self.column {
            write!(f, ", column `{column}`")?;
        }
        Ok(())
    }
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

/// `Ok` if `v` is finite and at least 0, else the config error for `key` (`f32` and `f64` keys
/// alike; the message shows the value as the user wrote it).
pub(crate) fn non_negative<T: Copy + Into<f64> + std::fmt::Display>(
    key: &'static str,
    v: T,
) -> Result<()> {
    let x: f64 = v.into();
    if x.is_finite() && x >= 0.0 {
        Ok(())
    } else {
        Err(config_error(
            key,
            format!("must be a finite number >= 0, got {v}"),
        ))
    }
}
