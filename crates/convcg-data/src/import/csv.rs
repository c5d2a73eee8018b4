//! Reading the headerless, unquoted comma-separated source files (taobao, tmall), and the field
//! parsers they share.

use std::path::Path;

use super::builder::{Tally, row_location};
use super::{MAX_TS, MIN_TS};
use crate::error::{Error, Location, Result};

/// Reads `file`, whose rows have one field per name in `columns`: `parse` turns each data row's
/// fields into a record, or names the bad field (its index in `columns`) and what is wrong with
/// it; `add` files each record with its row number (from 1). A row with another field count or a
/// bad field is skipped and counted in `tally` at its file, row and column. A first line with as
/// many fields as `columns`, none of them a number, is a header and is not a row. Line ends may
/// be LF or CRLF; the last line needs none.
pub(super) fn read_records<R>(
    file: &Path,
    columns: &[&str],
    tally: &mut Tally,
    parse: impl Fn(&[&[u8]]) -> std::result::Result<R, (usize, String)>,
    mut add: impl FnMut(u64, R),
) -> Result<()> {
    let width = columns.len();
    let bytes = std::fs::read(file).map_err(|e| Error::Io {
        path: file.to_path_buf(),
        source: e,
    })?;
    if bytes.is_empty() {
        return Err(Error::BadInput {
            at: Location::file(file),
            message: "the file is empty".into(),
        });
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    let mut lines = body.split(|&b| b == b'\n').peekable();
    if lines.peek().is_some_and(|first| is_header(first, width)) {
        lines.next();
    }
    let mut fields: Vec<&[u8]> = Vec::with_capacity(width);
    for (i, line) in lines.enumerate() {
        let number = i as u64 + 1;
        tally.rows_read += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        fields.clear();
        fields.extend(line.split(|&b| b == b','));
        if fields.len() != width {
            tally.skip(
                row_location(file, number),
                format!("{} fields, expected {width}", fields.len()),
            );
            continue;
        }
        match parse(&fields) {
            Ok(record) => {
                add(number, record);
                tally.rows_used += 1;
            }
            Err((column, message)) => {
                tally.skip(Location::cell(file, number, columns[column]), message);
            }
        }
    }
    Ok(())
}

fn is_header(line: &[u8], width: usize) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let fields: Vec<&[u8]> = line.split(|&b| b == b',').collect();
    fields.len() == width
        && fields
            .iter()
            .all(|f| text(f).is_none_or(|s| s.trim().parse::<f64>().is_err()))
}

/// A parsed field, or what is wrong with it.
pub(super) type Parsed<T> = std::result::Result<T, String>;

/// The field as UTF-8 text, if it is.
pub(super) fn text(field: &[u8]) -> Option<&str> {
    std::str::from_utf8(field).ok()
}

/// Parses an integer field (surrounding spaces allowed); the error message quotes the field.
pub(super) fn int(field: &[u8]) -> Parsed<i64> {
    text(field)
        .and_then(|s| s.trim().parse::<i64>().ok())
        .ok_or_else(|| format!("`{}` is not an integer", String::from_utf8_lossy(field)))
}

/// Checks a unix-seconds timestamp against [`MIN_TS`]..[`MAX_TS`].
pub(super) fn check_ts(ts: i64) -> Parsed<i64> {
    if (MIN_TS..MAX_TS).contains(&ts) {
        Ok(ts)
    } else {
        Err(format!(
            "timestamp {ts} is outside 2000-01-01..2100-01-01 (unix seconds {MIN_TS}..{MAX_TS})"
        ))
    }
}

/// Unix seconds of midnight UTC on a proleptic Gregorian date, or `None` for a date that does
/// not exist.
pub(super) fn midnight_utc(year: i32, month: u32, day: u32) -> Option<i64> {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > days_in_month {
        return None;
    }
    // Days from 1970-01-01, counting years from March so the leap day ends a year.
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    Some((era * 146_097 + day_of_era - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midnight_matches_known_dates() {
        assert_eq!(midnight_utc(1970, 1, 1), Some(0));
        assert_eq!(midnight_utc(2015, 11, 11), Some(1_447_200_000));
        assert_eq!(midnight_utc(2017, 11, 26), Some(1_511_654_400));
        assert_eq!(midnight_utc(2000, 2, 29), Some(951_782_400));
        assert_eq!(midnight_utc(2100, 1, 1), Some(MAX_TS));
        assert_eq!(midnight_utc(2015, 2, 29), None);
        assert_eq!(midnight_utc(2015, 13, 1), None);
        assert_eq!(midnight_utc(2015, 4, 31), None);
        assert_eq!(midnight_utc(2015, 4, 0), None);
    }

    #[test]
    fn consecutive_days_are_a_day_apart() {
        let mut prev = midnight_utc(1999, 12, 31).unwrap();
        for month in 1..=12 {
            for day in 1..=31 {
                if let Some(t) = midnight_utc(2000, month, day) {
                    assert_eq!(t - prev, 86_400, "2000-{month}-{day}");
                    prev = t;
                }
            }
        }
        assert_eq!(midnight_utc(2001, 1, 1).unwrap() - prev, 86_400);
    }

    #[test]
    fn headers_are_lines_without_numbers() {
        assert!(is_header(b"user_id,item_id,behavior", 3));
        assert!(is_header(b"user,item\r", 2));
        assert!(!is_header(b"user,item", 3));
        assert!(!is_header(b"1,2,pv,3", 4));
        assert!(!is_header(b"x,2", 2));
        assert!(!is_header(b"   ", 5));
        assert!(!is_header(b"", 5));
    }

    #[test]
    fn int_and_ts_checks() {
        assert_eq!(int(b" 42"), Ok(42));
        assert!(int(b"4x").unwrap_err().contains("`4x`"));
        assert!(int(b"").is_err());
        assert_eq!(check_ts(MIN_TS), Ok(MIN_TS));
        assert!(check_ts(15).is_err());
        assert!(check_ts(MAX_TS).is_err());
    }
}
