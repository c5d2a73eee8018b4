//! Trivago RecSys Challenge 2019 sessions (Parquet): user_id, session_id, timestamp, step,
//! action_type, reference, platform, city, device, current_filters, impressions, prices.

use std::fs::File;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{
    AnyDictionaryArray, Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::builder::{Columns, Finished, LogBuilder, Tally, finish};
use super::config::{DataSection, EVAL_SHARE, EvalProtocol, Measured, words};
use super::csv::check_ts;
use super::dictionary::{Dictionary, QUERY_SEPARATOR};
use super::{Imported, PLACEHOLDER_ADVERTISER, Source};
use crate::error::{Error, Location, Result};
use crate::schema::{
    Conversion, ConversionKind, Engagement, EngagementKind, Impression, PinRecord, Surface,
};

/// The columns read (`session_id` and `step` are not).
const COLUMNS: [&str; 10] = [
    "user_id",
    "timestamp",
    "action_type",
    "reference",
    "platform",
    "city",
    "device",
    "current_filters",
    "impressions",
    "prices",
];
const CLICKOUT: &str = "clickout item";
const INTERACTIONS: [&str; 4] = [
    "interaction item image",
    "interaction item info",
    "interaction item rating",
    "interaction item deals",
];
const CATEGORICAL: [&str; 2] = ["c_platform", "c_device"];
const CLICK_WINDOW_S: i64 = 3600;
const BATCH_ROWS: usize = 8192;

/// A string column of any of the layouts Arrow reads Parquet strings into.
enum Strings<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    Dictionary {
        array: &'a dyn AnyDictionaryArray,
        keys: Vec<usize>,
        values: Box<Strings<'a>>,
    },
}

impl<'a> Strings<'a> {
    fn new(array: &'a dyn Array) -> Option<Strings<'a>> {
        if let Some(a) = array.as_string_opt::<i32>() {
            return Some(Strings::Utf8(a));
        }
        if let Some(a) = array.as_string_opt::<i64>() {
            return Some(Strings::Large(a));
        }
        if let Some(a) = array.as_string_view_opt() {
            return Some(Strings::View(a));
        }
        let dict = array.as_any_dictionary_opt()?;
        let values = Box::new(Strings::new(dict.values().as_ref())?);
        // `normalized_keys` needs at least one value; without any, every entry is null.
        let keys = if dict.values().is_empty() {
            Vec::new()
        } else {
            dict.normalized_keys()
        };
        Some(Strings::Dictionary {
            array: dict,
            keys,
            values,
        })
    }

    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Dictionary {
                array,
                keys,
                values,
            } => {
                if array.is_valid(i) {
                    values.get(*keys.get(i)?)
                } else {
                    None
                }
            }
        }
    }
}

/// An integer column, 64 or 32 bits.
enum Ints<'a> {
    I64(&'a Int64Array),
    I32(&'a Int32Array),
}

impl<'a> Ints<'a> {
    fn new(array: &'a dyn Array) -> Option<Ints<'a>> {
        if let Some(a) = array.as_primitive_opt::<Int64Type>() {
            return Some(Ints::I64(a));
        }
        array.as_primitive_opt::<Int32Type>().map(Ints::I32)
    }

    fn get(&self, i: usize) -> Option<i64> {
        match self {
            Ints::I64(a) => a.is_valid(i).then(|| a.value(i)),
            Ints::I32(a) => a.is_valid(i).then(|| i64::from(a.value(i))),
        }
    }
}

/// A string column and its name.
struct Column<'a> {
    name: &'static str,
    values: Strings<'a>,
}

impl<'a> Column<'a> {
    fn get(&self, i: usize) -> Option<&'a str> {
        self.values.get(i)
    }
}

/// The columns of one record batch.
struct Batch<'a> {
    user_id: Column<'a>,
    timestamp: Ints<'a>,
    action_type: Column<'a>,
    reference: Column<'a>,
    platform: Column<'a>,
    city: Column<'a>,
    device: Column<'a>,
    current_filters: Column<'a>,
    impressions: Column<'a>,
    prices: Column<'a>,
}

impl<'a> Batch<'a> {
    fn new(file: &Path, batch: &'a RecordBatch) -> Result<Batch<'a>> {
        let array = |name: &'static str| {
            batch
                .column_by_name(name)
                .map(|a| a.as_ref())
                .ok_or_else(|| Error::BadInput {
                    at: Location::column(file, name),
                    message: "the column is missing".into(),
                })
        };
        let wrong_type = |name: &str, what: &str, array: &dyn Array| Error::BadInput {
            at: Location::column(file, name),
            message: format!("expected {what}, found {}", array.data_type()),
        };
        let strings = |name: &'static str| -> Result<Column<'a>> {
            let a = array(name)?;
            let values = Strings::new(a).ok_or_else(|| wrong_type(name, "strings", a))?;
            Ok(Column { name, values })
        };
        let ts = array("timestamp")?;
        Ok(Batch {
            user_id: strings("user_id")?,
            timestamp: Ints::new(ts).ok_or_else(|| wrong_type("timestamp", "integers", ts))?,
            action_type: strings("action_type")?,
            reference: strings("reference")?,
            platform: strings("platform")?,
            city: strings("city")?,
            device: strings("device")?,
            current_filters: strings("current_filters")?,
            impressions: strings("impressions")?,
            prices: strings("prices")?,
        })
    }
}

/// A validated source row, before any id is assigned.
struct Row<'a> {
    user: &'a str,
    ts: i64,
    reference: &'a str,
    platform: &'a str,
    city: &'a str,
    device: &'a str,
    filters: &'a str,
    /// A clickout's listed items and their prices; `None` for an interaction.
    listing: Option<(Vec<&'a str>, Vec<f32>)>,
}

/// The column that failed, and why.
type RowError = (&'static str, String);
type RowResult<T> = std::result::Result<T, RowError>;

fn required<'a>(column: &Column<'a>, i: usize) -> RowResult<&'a str> {
    match column.get(i) {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err((column.name, "empty".into())),
        None => Err((column.name, "missing (null)".into())),
    }
}

fn listing<'a>(b: &Batch<'a>, i: usize) -> RowResult<(Vec<&'a str>, Vec<f32>)> {
    let items: Vec<&str> = required(&b.impressions, i)?.split('|').collect();
    if let Some(k) = items.iter().position(|s| s.trim().is_empty()) {
        return Err((
            "impressions",
            format!("item {} of the list is empty", k + 1),
        ));
    }
    let prices: Vec<&str> = required(&b.prices, i)?.split('|').collect();
    if prices.len() != items.len() {
        return Err((
            "prices",
            format!("{} prices for {} listed items", prices.len(), items.len()),
        ));
    }
    let prices = prices
        .iter()
        .enumerate()
        .map(|(k, p)| match p.trim().parse::<f32>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
            _ => Err((
                "prices",
                format!("price {} `{p}` is not a finite number >= 0", k + 1),
            )),
        })
        .collect::<RowResult<Vec<f32>>>()?;
    Ok((items, prices))
}

fn parse<'a>(b: &Batch<'a>, i: usize, clickout: bool) -> RowResult<Row<'a>> {
    let user = required(&b.user_id, i)?;
    let ts = b
        .timestamp
        .get(i)
        .ok_or_else(|| ("timestamp", "missing (null)".to_owned()))
        .and_then(|t| check_ts(t).map_err(|m| ("timestamp", m)))?;
    Ok(Row {
        user,
        ts,
        reference: required(&b.reference, i)?,
        platform: required(&b.platform, i)?,
        city: required(&b.city, i)?,
        device: required(&b.device, i)?,
        filters: b.current_filters.get(i).unwrap_or(""),
        listing: if clickout { Some(listing(b, i)?) } else { None },
    })
}

/// The dictionaries, and the ids and counters that grow while rows are added.
struct Ids {
    user: Dictionary,
    item: Dictionary,
    city: Dictionary,
    query: Dictionary,
    platform: Dictionary,
    device: Dictionary,
    next_impression: i64,
    interaction_impressions: u64,
    unlisted_clickouts: u64,
}

impl Ids {
    fn new() -> Ids {
        Ids {
            user: Dictionary::new("user"),
            item: Dictionary::new("item"),
            city: Dictionary::new("city"),
            query: Dictionary::new("query"),
            platform: Dictionary::new("platform"),
            device: Dictionary::new("device"),
            next_impression: 1,
            interaction_impressions: 0,
            unlisted_clickouts: 0,
        }
    }

    fn into_dictionaries(self) -> Vec<Dictionary> {
        vec![
            self.user,
            self.item,
            self.city,
            self.query,
            self.platform,
            self.device,
        ]
    }
}

/// What every impression of one source row shares.
struct Request {
    /// The source row number.
    id: i64,
    ts: i64,
    user: i64,
    city: i64,
    query: i64,
    /// `c_platform`, `c_device`.
    context: [i64; 2],
}

/// Adds an impression of `item` in `request`, with its pin; returns the impression's id.
fn show(
    log: &mut LogBuilder,
    ids: &mut Ids,
    request: &Request,
    item: &str,
    position: Option<u32>,
    price: Option<f32>,
) -> i64 {
    let pin = ids.item.intern(item);
    log.pin(PinRecord {
        pin_id: pin,
        advertiser_id: PLACEHOLDER_ADVERTISER,
        category_id: request.city,
        brand_id: None,
        price,
        dense: Vec::new(),
    });
    let impression_id = ids.next_impression;
    ids.next_impression += 1;
    log.impression(
        Impression {
            impression_id,
            request_id: request.id,
            ts: request.ts,
            user_id: request.user,
            pin_id: pin,
            surface: Surface::Search,
            position,
            context_pin_id: None,
            query_id: Some(request.query),
        },
        &request.context,
    );
    impression_id
}

/// Adds a valid row's events; `number` is its source row number.
fn add(log: &mut LogBuilder, ids: &mut Ids, number: i64, row: Row<'_>) {
    let request = Request {
        id: number,
        ts: row.ts,
        user: ids.user.intern(row.user),
        city: ids.city.intern(row.city),
        query: ids
            .query
            .intern(&format!("{}{QUERY_SEPARATOR}{}", row.city, row.filters)),
        context: [
            ids.platform.intern(row.platform),
            ids.device.intern(row.device),
        ],
    };
    match row.listing {
        None => {
            let impression_id = show(log, ids, &request, row.reference, None, None);
            ids.interaction_impressions += 1;
            log.engagement(Engagement {
                impression_id,
                ts: row.ts,
                kind: EngagementKind::Click,
                duration_s: None,
            });
        }
        Some((items, prices)) => {
            for (k, (item, price)) in items.iter().zip(prices).enumerate() {
                show(log, ids, &request, item, Some(k as u32 + 1), Some(price));
            }
            if !items.contains(&row.reference) {
                show(log, ids, &request, row.reference, None, None);
                ids.unlisted_clickouts += 1;
            }
            log.conversion(Conversion {
                ts: row.ts,
                user_id: request.user,
                pin_id: ids.item.intern(row.reference),
                kind: ConversionKind::Lead,
                value: None,
            });
        }
    }
}

pub(super) fn import(file: &Path) -> Result<Imported> {
    let handle = File::open(file).map_err(|e| Error::Io {
        path: file.to_path_buf(),
        source: e,
    })?;
    let not_parquet = |e: parquet::errors::ParquetError| Error::BadInput {
        at: Location::file(file),
        message: format!("not a readable Parquet file: {e}"),
    };
    let reader = ParquetRecordBatchReaderBuilder::try_new(handle).map_err(not_parquet)?;
    let mut roots = Vec::with_capacity(COLUMNS.len());
    for name in COLUMNS {
        let root = reader
            .schema()
            .index_of(name)
            .map_err(|_| Error::BadInput {
                at: Location::column(file, name),
                message: "the column is missing".into(),
            })?;
        roots.push(root);
    }
    let mask = ProjectionMask::roots(reader.parquet_schema(), roots);
    let reader = reader
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(not_parquet)?;

    let mut log = LogBuilder::new(Columns {
        position: true,
        query: true,
        categorical: &CATEGORICAL,
    });
    let mut ids = Ids::new();
    let mut tally = Tally::default();
    for batch in reader {
        let batch = batch.map_err(|e| Error::BadInput {
            at: Location::file(file),
            message: format!("reading row {}: {e}", tally.rows_read + 1),
        })?;
        let columns = Batch::new(file, &batch)?;
        for i in 0..batch.num_rows() {
            tally.rows_read += 1;
            let number = tally.rows_read;
            let Some(action) = columns.action_type.get(i) else {
                tally.skip(
                    Location::cell(file, number, "action_type"),
                    "missing (null)".into(),
                );
                continue;
            };
            let clickout = action == CLICKOUT;
            if !clickout && !INTERACTIONS.contains(&action) {
                tally.ignore(action);
                continue;
            }
            match parse(&columns, i, clickout) {
                Ok(row) => {
                    add(&mut log, &mut ids, number as i64, row);
                    tally.rows_used += 1;
                }
                Err((column, message)) => {
                    tally.skip(Location::cell(file, number, column), message);
                }
            }
        }
    }
    let measured = Measured::of(log.log(), CLICK_WINDOW_S);
    let notes = notes(&ids);
    finish(
        file,
        Finished {
            source: Source::Trivago,
            builder: log,
            tally,
            dictionaries: ids.into_dictionaries(),
            data: section(&measured),
            notes,
        },
    )
}

fn notes(ids: &Ids) -> Vec<String> {
    vec![
        format!(
            "advertiser_id is {PLACEHOLDER_ADVERTISER} for every pin (the source has no advertiser); category_id is the id of the city of the first row naming the item (a hotel listed in searches for several cities keeps the first: the disagreeing pins)"
        ),
        "a clickout is a `lead` conversion without value (the booking is not observed); the unengaged impressions are its unclicked listed items, the hard negatives".into(),
        format!(
            "{} interaction rows got an impression of their own (no position) to carry their click",
            ids.interaction_impressions
        ),
        format!(
            "{} clickouts named an item missing from their list; it got an impression of its own (no position)",
            ids.unlisted_clickouts
        ),
        "session_id and step are not used: requests are the clickout rows (request_id = source row)".into(),
    ]
}

fn section(m: &Measured) -> DataSection {
    let history_len = m.history_len();
    DataSection {
        source: Source::Trivago,
        eval_protocol: (
            EvalProtocol::Time,
            format!(
                "The log spans {} and clickouts are recorded as they happen, so a time split\n\
                 works: train on the earlier sessions, evaluate on the last ones.",
                words(m.span_s)
            ),
        ),
        eval_window_s: (
            m.eval_window_s,
            format!(
                "The last {:.0}% of the impressions fall in the last {}: the eval window.",
                EVAL_SHARE * 100.0,
                words(m.eval_window_s)
            ),
        ),
        click_window_s: (
            CLICK_WINDOW_S,
            format!(
                "A clickout is credited to the user's last interaction with the item up to {}\n\
                 before it (sessions last minutes).\n{}\n\
                 Conversions are labels once this window has passed, so a short window keeps\n\
                 most of the log trainable.",
                words(CLICK_WINDOW_S),
                m.click_share()
            ),
        ),
        view_window_s: (
            0,
            "The list shown at a clickout has the clickout's second, so a clickout without an\n\
             earlier interaction is credited view-through to its listed impression with no wait."
                .into(),
        ),
        id_code_dim: m.id_code_dim(history_len.0),
        history_len,
    }
}
