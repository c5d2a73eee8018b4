//! What the two shop logs (taobao, tmall) share: a comma-separated file whose every row is one
//! user's action on one item, filed as a home-feed impression of the item with the action on it.

use std::path::Path;

use super::builder::{Columns, Finished, LogBuilder, Tally, finish};
use super::config::{DataSection, Measured};
use super::csv::read_records;
use super::{Imported, Source};
use crate::error::Result;
use crate::schema::{
    Conversion, ConversionKind, Engagement, EngagementKind, Impression, PinRecord, Surface,
};

/// What one row of a shop log did with an item.
#[derive(Clone, Copy)]
pub(super) enum ShopAction {
    /// Looked at (click) or kept (save) the item.
    Engage(EngagementKind),
    /// Bought it.
    Buy,
}

/// One shop-log row, read: who did what to which item (with the attributes the row gives it),
/// and when.
pub(super) struct ShopRow {
    pub(super) user: i64,
    pub(super) item: i64,
    pub(super) category: i64,
    pub(super) advertiser: i64,
    pub(super) brand: Option<i64>,
    pub(super) action: ShopAction,
    pub(super) ts: i64,
}

/// A row read, or its bad field (the field's index among the columns) and what is wrong with it.
pub(super) type RowResult = std::result::Result<ShopRow, (usize, String)>;

/// A shop log's format: its columns, how a row is read, and what the imported dataset config
/// and report say about it.
pub(super) struct ShopFormat {
    pub(super) source: Source,
    /// The columns' names, in file order.
    pub(super) columns: &'static [&'static str],
    /// Reads a data row's fields.
    pub(super) parse: fn(&[&[u8]]) -> RowResult,
    /// The click window the config's measurements are taken against.
    pub(super) click_window_s: i64,
    /// The `[data]` section for the log measured.
    pub(super) section: fn(&Measured) -> DataSection,
    /// The report's notes on the mapping.
    pub(super) notes: fn() -> Vec<String>,
}

impl ShopFormat {
    /// Imports `file`, a log in this format.
    pub(super) fn import(&self, file: &Path) -> Result<Imported> {
        let mut log = LogBuilder::new(Columns {
            position: false,
            query: false,
            categorical: &[],
        });
        let mut tally = Tally::default();
        read_records(file, self.columns, &mut tally, self.parse, |number, row| {
            add(&mut log, number as i64, row)
        })?;
        let measured = Measured::of(log.log(), self.click_window_s);
        finish(
            file,
            Finished {
                source: self.source,
                builder: log,
                tally,
                dictionaries: Vec::new(),
                data: (self.section)(&measured),
                notes: (self.notes)(),
            },
        )
    }
}

/// Files one shop-log row: its item as a pin, the row as a home-feed impression of it whose
/// impression and request id are the row number, and the action as an engagement of that
/// impression or as a purchase of the item.
fn add(log: &mut LogBuilder, row_number: i64, row: ShopRow) {
    let ShopRow {
        user,
        item: pin_id,
        category,
        advertiser,
        brand,
        action,
        ts,
    } = row;
    log.pin(PinRecord {
        pin_id,
        advertiser_id: advertiser,
        category_id: category,
        brand_id: brand,
        price: None,
        dense: Vec::new(),
    });
    log.impression(
        Impression {
            impression_id: row_number,
            request_id: row_number,
            ts,
            user_id: user,
            pin_id,
            surface: Surface::HomeFeed,
            position: None,
            context_pin_id: None,
            query_id: None,
        },
        &[],
    );
    match action {
        ShopAction::Engage(kind) => log.engagement(Engagement {
            impression_id: row_number,
            ts,
            kind,
            duration_s: None,
        }),
        ShopAction::Buy => log.conversion(Conversion {
            ts,
            user_id: user,
            pin_id,
            kind: ConversionKind::Purchase,
            value: None,
        }),
    }
}
