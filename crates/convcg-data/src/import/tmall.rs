//! Tmall user log: user_id, item_id, cat_id, merchant_id, brand_id, month, day, action,
//! age_range, gender, province.

use super::config::{DataSection, EvalProtocol, Measured};
use super::csv::{Parsed, int, midnight_utc};
use super::shop::{RowResult, ShopAction, ShopFormat, ShopRow};
use super::{Source, TMALL_YEAR};
use crate::schema::EngagementKind;

const COLUMNS: [&str; 11] = [
    "user_id",
    "item_id",
    "cat_id",
    "merchant_id",
    "brand_id",
    "month",
    "day",
    "action",
    "age_range",
    "gender",
    "province",
];
const DAY_S: i64 = 86_400;

fn action(code: i64) -> Parsed<ShopAction> {
    match code {
        0 => Ok(ShopAction::Engage(EngagementKind::Click)),
        1 | 3 => Ok(ShopAction::Engage(EngagementKind::Save)),
        2 => Ok(ShopAction::Buy),
        other => Err(format!(
            "action {other} is not one of 0 (click), 1 (cart), 2 (buy), 3 (fav)"
        )),
    }
}

/// The tmall format.
pub(super) const FORMAT: ShopFormat = ShopFormat {
    source: Source::Tmall,
    columns: &COLUMNS,
    parse,
    click_window_s: 0,
    section,
    notes,
};

fn parse(fields: &[&[u8]]) -> RowResult {
    let at = |column: usize| move |message: String| (column, message);
    let user = int(fields[0]).map_err(at(0))?;
    let item = int(fields[1]).map_err(at(1))?;
    let category = int(fields[2]).map_err(at(2))?;
    let merchant = int(fields[3]).map_err(at(3))?;
    let brand = match fields[4].trim_ascii() {
        b"" => None,
        f => Some(int(f).map_err(at(4))?),
    };
    let month = int(fields[5]).map_err(at(5))?;
    if !(1..=12).contains(&month) {
        return Err((5, format!("month {month} is not in 1..=12")));
    }
    let day = int(fields[6]).map_err(at(6))?;
    let ts = u32::try_from(day)
        .ok()
        .and_then(|d| midnight_utc(TMALL_YEAR, month as u32, d))
        .ok_or_else(|| (6, format!("{TMALL_YEAR}-{month:02}-{day:02} is not a date")))?;
    let action = int(fields[7]).and_then(action).map_err(at(7))?;
    Ok(ShopRow {
        user,
        item,
        category,
        advertiser: merchant,
        brand,
        action,
        ts,
    })
}

fn notes() -> Vec<String> {
    vec![
        format!(
            "ts is midnight UTC of month/day in {TMALL_YEAR} (the Tmall log's year; the file has none): day-level only"
        ),
        "order inside a day is file order: impression_id = request_id = source row, and conversions are in file order".into(),
        "age_range, gender and province are not read (noise, see the data's README)".into(),
        "no hard negatives: every row is a click, cart, fav or buy, so every impression is engaged or bought".into(),
    ]
}

fn section(m: &Measured) -> DataSection {
    let history_len = m.history_len();
    let days = m.span_s / DAY_S + 1;
    DataSection {
        source: Source::Tmall,
        eval_protocol: (
            EvalProtocol::LastConversion,
            format!(
                "The log's timestamps are days and it covers {days} day{}, so it cannot be split by\n\
                 time: each buyer's last buy in file order is held out as an eval query, with the\n\
                 user's earlier events (in file order: impression_id) as history.",
                if days == 1 { "" } else { "s" }
            ),
        ),
        eval_window_s: (
            days * DAY_S,
            "Not used by last_conversion; set to the log's span in days so that it stays valid."
                .into(),
        ),
        click_window_s: (
            0,
            format!(
                "Events of one day share one timestamp, so a buy is credited to a click of the same\n\
                 day (the same second) and nothing wider has a meaning at this resolution.\n{}",
                m.click_share()
            ),
        ),
        view_window_s: (
            0,
            "Every buy row is also its own impression at the same timestamp, so a buy without a\n\
             click is credited view-through to that record."
                .into(),
        ),
        id_code_dim: m.id_code_dim(history_len.0),
        history_len,
    }
}
