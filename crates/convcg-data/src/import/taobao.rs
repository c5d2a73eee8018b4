//! Taobao UserBehavior: user, item, category, behavior, unix_ts.

use std::path::Path;

use super::builder::{Columns, Finished, LogBuilder, ShopAction, Tally, add_shop_row, finish};
use super::config::{DataSection, EVAL_SHARE, EvalProtocol, Measured, words};
use super::csv::{Parsed, check_ts, int, read_records};
use super::{Imported, PLACEHOLDER_ADVERTISER, Source};
use crate::error::Result;
use crate::schema::{EngagementKind, PinRecord};

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

struct Row {
    user: i64,
    item: i64,
    category: i64,
    behavior: ShopAction,
    ts: i64,
}

fn parse(fields: &[&[u8]]) -> std::result::Result<Row, (usize, String)> {
    let at = |column: usize| move |message: String| (column, message);
    Ok(Row {
        user: int(fields[0]).map_err(at(0))?,
        item: int(fields[1]).map_err(at(1))?,
        category: int(fields[2]).map_err(at(2))?,
        behavior: behavior(fields[3]).map_err(at(3))?,
        ts: int(fields[4]).and_then(check_ts).map_err(at(4))?,
    })
}

pub(super) fn import(file: &Path) -> Result<Imported> {
    let mut log = LogBuilder::new(Columns {
        position: false,
        query: false,
        categorical: &[],
    });
    let mut tally = Tally::default();
    read_records(file, &COLUMNS, &mut tally, parse, |number, row| {
        add(&mut log, number as i64, row)
    })?;
    let measured = Measured::of(log.log(), CLICK_WINDOW_S);
    let data = section(&measured);
    let notes = vec![
        format!(
            "advertiser_id is {PLACEHOLDER_ADVERTISER} for every pin: the source has no advertiser, so advertiser-level losses and metrics carry no information"
        ),
        "no hard negatives: every row is a pv, fav, cart or buy, so every impression is engaged or bought".into(),
        "each row is its own request (impression_id = request_id = source row), on the home feed".into(),
    ];
    finish(
        file,
        Finished {
            source: Source::Taobao,
            builder: log,
            tally,
            dictionaries: Vec::new(),
            data,
            notes,
        },
    )
}

fn add(log: &mut LogBuilder, row_number: i64, row: Row) {
    let pin = PinRecord {
        pin_id: row.item,
        advertiser_id: PLACEHOLDER_ADVERTISER,
        category_id: row.category,
        brand_id: None,
        price: None,
        dense: Vec::new(),
    };
    add_shop_row(log, row_number, row.ts, row.user, pin, row.behavior);
}

fn section(m: &Measured) -> DataSection {
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
        history_len: m.history_len(),
    }
}
