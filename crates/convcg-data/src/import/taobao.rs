//! Taobao UserBehavior: user, item, category, behavior, unix_ts.

use super::config::{DataSection, EVAL_SHARE, EvalProtocol, Measured, words};
use super::csv::{Parsed, check_ts, int};
use super::shop::{RowResult, ShopAction, ShopFormat, ShopRow};
use super::{PLACEHOLDER_ADVERTISER, Source};
use crate::schema::EngagementKind;

const COLUMNS: [&str; 5] = ["user", "item", "category", "behavior", "unix_ts"];
const CLICK_WINDOW_S: i64 = 3600;

fn behavior(field: &[u8]) -> Parsed<ShopAction> {
    match field {
        b"pv" => Ok(ShopAction::Engage(EngagementKind::Click)),
        b"fav" | b"cart" => Ok(ShopAction::Engage(EngagementKind::Save)),
        b"buy" => Ok(ShopAction::Buy),
        other => Err(format!(
            "behavior `{}` is not one of pv, fav, cart, buy",
            String::from_utf8_lossy(other)
        )),
    }
}

/// The taobao format.
pub(super) const FORMAT: ShopFormat = ShopFormat {
    source: Source::Taobao,
    columns: &COLUMNS,
    parse,
    click_window_s: CLICK_WINDOW_S,
    section,
    notes,
};

fn parse(fields: &[&[u8]]) -> RowResult {
    let at = |column: usize| move |message: String| (column, message);
    Ok(ShopRow {
        user: int(fields[0]).map_err(at(0))?,
        item: int(fields[1]).map_err(at(1))?,
        category: int(fields[2]).map_err(at(2))?,
        advertiser: PLACEHOLDER_ADVERTISER,
        brand: None,
        action: behavior(fields[3]).map_err(at(3))?,
        ts: int(fields[4]).and_then(check_ts).map_err(at(4))?,
    })
}

fn notes() -> Vec<String> {
    vec![
        format!(
            "advertiser_id is {PLACEHOLDER_ADVERTISER} for every pin: the source has no advertiser, so advertiser-level losses and metrics carry no information"
        ),
        "no hard negatives: every row is a pv, fav, cart or buy, so every impression is engaged or bought".into(),
        "each row is its own request (impression_id = request_id = source row), on the home feed".into(),
    ]
}

fn section(m: &Measured) -> DataSection {
    let history_len = m.history_len();
    DataSection {
        source: Source::Taobao,
        eval_protocol: (
            EvalProtocol::LastConversion,
            format!(
                "The log spans {}: a time split leaves a few hundred buys in its last minutes,\n\
                 too few to tell a model from popularity (on this slice, recall@100 of both was\n\
                 0.012 over 427 queries). So each buyer's last buy (in time, then file order:\n\
                 impression_id) is held out as an eval query, with the user's earlier events as\n\
                 history; the users' events from their queries on are not trained on.",
                words(m.span_s)
            ),
        ),
        eval_window_s: (
            m.eval_window_s,
            format!(
                "Not used by last_conversion. A time split would take the last {:.0}% of the\n\
                 impressions, the last {}.",
                EVAL_SHARE * 100.0,
                words(m.eval_window_s)
            ),
        ),
        click_window_s: (
            CLICK_WINDOW_S,
            format!(
                "A purchase is credited to the user's last pv of the item up to {} before it.\n{}\n\
                 Conversions are labels once this window has passed, so a short window keeps\n\
                 most of an hours-long log trainable.",
                words(CLICK_WINDOW_S),
                m.click_share()
            ),
        ),
        view_window_s: (
            0,
            "Every buy row is also its own impression at the same second, so a purchase without\n\
             an earlier pv is credited view-through to that record with no wait; a wider window\n\
             would change nothing but the label delay."
                .into(),
        ),
        id_code_dim: m.id_code_dim(history_len.0),
        history_len,
    }
}
