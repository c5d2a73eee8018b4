//! The `label | value` tables that [`LabelStats`](crate::LabelStats) and
//! [`DatasetStats`](crate::DatasetStats) print as their `Display`, and the rows they share.

use std::fmt;

/// One row of a table: its label, and its value as printed.
pub(crate) type Row = (&'static str, String);

/// Writes `rows` one a line as `label | value`, the labels padded to the longest.
pub(crate) fn write_rows(f: &mut fmt::Formatter<'_>, rows: &[Row]) -> fmt::Result {
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        writeln!(f, "{k:<w$} | {v}")?;
    }
    Ok(())
}

/// The row of conversions attributed to a click and to a view.
pub(crate) fn attributed_row(click_through: usize, view_through: usize) -> Row {
    (
        "attributed click-through / view-through",
        format!("{click_through} / {view_through}"),
    )
}

/// The rows of hard negatives drawn from the positive's request and from the user's same day,
/// and of positives that drew none.
pub(crate) fn hard_negative_rows(
    from_request: usize,
    from_same_day: usize,
    positives_without: usize,
) -> [Row; 2] {
    [
        (
            "hard negatives: request / same day",
            format!("{from_request} / {from_same_day}"),
        ),
        (
            "positives without a hard negative",
            positives_without.to_string(),
        ),
    ]
}
