//! The canonical event schema (docs/design.md, Canonical schema): one record type per table.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ExpectedNames, Result};

/// Where an ad was shown.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Surface {
    /// The home feed: no context.
    HomeFeed,
    /// Related pins: the context is the pin being viewed.
    Related,
    /// Search: the context is the query.
    Search,
}

impl Surface {
    /// Every surface, in [`Surface::index`] order.
    pub const ALL: [Surface; 3] = [Surface::HomeFeed, Surface::Related, Surface::Search];
    const NAMES: [&'static str; 3] = ["homefeed", "related", "search"];

    /// The schema's name: `homefeed`, `related` or `search`.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self.index()]
    }

    /// 0, 1, 2 for home feed, related, search.
    pub fn index(self) -> usize {
        match self {
            Surface::HomeFeed => 0,
            Surface::Related => 1,
            Surface::Search => 2,
        }
    }

    /// The surface with this [`Surface::index`], if any.
    pub fn from_index(index: usize) -> Option<Surface> {
        Self::ALL.get(index).copied()
    }
}

impl fmt::Display for Surface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Surface {
    type Err = Error;

    fn from_str(s: &str) -> Result<Surface> {
        parse_name(s, "surface", &Self::NAMES, &Self::ALL)
    }
}

/// An onsite engagement with an impression.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EngagementKind {
    /// A click through to the advertiser's page.
    Click,
    /// A save (repin).
    Save,
}

impl EngagementKind {
    /// Every kind.
    pub const ALL: [EngagementKind; 2] = [EngagementKind::Click, EngagementKind::Save];
    const NAMES: [&'static str; 2] = ["click", "save"];

    /// The schema's name: `click` or `save`.
    pub fn as_str(self) -> &'static str {
        match self {
            EngagementKind::Click => "click",
            EngagementKind::Save => "save",
        }
    }
}

impl fmt::Display for EngagementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngagementKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<EngagementKind> {
        parse_name(s, "engagement kind", &Self::NAMES, &Self::ALL)
    }
}

/// An offsite conversion reported by the advertiser.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ConversionKind {
    /// A completed purchase.
    Purchase,
    /// A started checkout.
    Checkout,
    /// An item added to the cart.
    AddToCart,
    /// An account sign-up.
    Signup,
    /// A submitted lead form.
    Lead,
}

impl ConversionKind {
    /// Every kind.
    pub const ALL: [ConversionKind; 5] = [
        ConversionKind::Purchase,
        ConversionKind::Checkout,
        ConversionKind::AddToCart,
        ConversionKind::Signup,
        ConversionKind::Lead,
    ];
    const NAMES: [&'static str; 5] = ["purchase", "checkout", "add_to_cart", "signup", "lead"];

    /// The schema's name: `purchase`, `checkout`, `add_to_cart`, `signup` or `lead`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversionKind::Purchase => "purchase",
            ConversionKind::Checkout => "checkout",
            ConversionKind::AddToCart => "add_to_cart",
            ConversionKind::Signup => "signup",
            ConversionKind::Lead => "lead",
        }
    }
}

impl fmt::Display for ConversionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ConversionKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<ConversionKind> {
        parse_name(s, "conversion kind", &Self::NAMES, &Self::ALL)
    }
}

fn parse_name<T: Copy>(
    s: &str,
    what: &'static str,
    names: &'static [&'static str],
    values: &[T],
) -> Result<T> {
    names
        .iter()
        .position(|n| *n == s)
        .map(|i| values[i])
        .ok_or_else(|| Error::UnknownName {
            what,
            value: s.to_owned(),
            expected: ExpectedNames(names),
        })
}

/// One row of the `pins` table: an ad pin of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinRecord {
    /// The pin's id.
    pub pin_id: i64,
    /// The advertiser that owns it.
    pub advertiser_id: i64,
    /// Its product category.
    pub category_id: i64,
    /// Its brand, where known.
    pub brand_id: Option<i64>,
    /// Its price, where known.
    pub price: Option<f32>,
    /// The `f_*` dense columns, in [`EventLog::pin_dense_names`] order.
    pub dense: Vec<f32>,
}

/// One row of the `users` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The user's id.
    pub user_id: i64,
    /// The `c_*` categorical columns, in [`EventLog::user_categorical_names`] order.
    pub categorical: Vec<i64>,
    /// The `f_*` dense columns, in [`EventLog::user_dense_names`] order.
    pub dense: Vec<f32>,
}

/// One row of the `impressions` table: an ad shown to a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Impression {
    /// Unique id of this impression.
    pub impression_id: i64,
    /// The request (page load) it was served in; several ads share one.
    pub request_id: i64,
    /// Unix seconds.
    pub ts: i64,
    /// Who saw it.
    pub user_id: i64,
    /// The ad pin shown.
    pub pin_id: i64,
    /// Where it was shown.
    pub surface: Surface,
    /// Slot in the request, 1-based, where known.
    pub position: Option<u32>,
    /// The pin being viewed (related pins only).
    pub context_pin_id: Option<i64>,
    /// The search query (search only).
    pub query_id: Option<i64>,
}

/// A categorical `c_*` column: its name (with the prefix) and one id per row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoricalColumn {
    /// The column's name, `c_` prefix included.
    pub name: String,
    /// One value per row; strings in a file are mapped to ids by [`stable_string_id`].
    pub values: Vec<i64>,
}

/// The `impressions` table, column by column (it is by far the largest table: a column store keeps
/// it at about 45 bytes a row and lets a reader fill it straight from Parquet column chunks).
///
/// The required columns all have [`Impressions::len`] rows. Each optional column (`position`,
/// `context_pin_id`, `query_id`) is either empty, meaning absent from the log (every row `None`),
/// or of full length; [`Impressions::check_lengths`] verifies that.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Impressions {
    /// Unique id of each impression.
    pub impression_id: Vec<i64>,
    /// The request (page load) it was served in; several ads share one.
    pub request_id: Vec<i64>,
    /// Unix seconds.
    pub ts: Vec<i64>,
    /// Who saw it.
    pub user_id: Vec<i64>,
    /// The ad pin shown.
    pub pin_id: Vec<i64>,
    /// Where it was shown.
    pub surface: Vec<Surface>,
    /// Slot in the request, 1-based, where known; empty when the log has no such column.
    pub position: Vec<Option<u32>>,
    /// The pin being viewed (related pins); empty when the log has no such column.
    pub context_pin_id: Vec<Option<i64>>,
    /// The search query (search); empty when the log has no such column.
    pub query_id: Vec<Option<i64>>,
    /// The `c_*` context columns (device, platform, ...), each of full length.
    pub categorical: Vec<CategoricalColumn>,
}

fn optional<T: Copy>(column: &[Option<T>], i: usize) -> Option<T> {
    column.get(i).copied().flatten()
}

impl Impressions {
    /// An empty table with room for `n` rows in the required and optional columns.
    pub fn with_capacity(n: usize) -> Impressions {
        Impressions {
            impression_id: Vec::with_capacity(n),
            request_id: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            pin_id: Vec::with_capacity(n),
            surface: Vec::with_capacity(n),
            position: Vec::with_capacity(n),
            context_pin_id: Vec::with_capacity(n),
            query_id: Vec::with_capacity(n),
            categorical: Vec::new(),
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.impression_id.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.impression_id.is_empty()
    }

    /// Appends a row to the required and optional columns (which must not be absent, unless
    /// the table is empty). `c_*` columns are the caller's to extend.
    pub fn push(&mut self, imp: Impression) {
        self.push_required(&imp);
        self.position.push(imp.position);
        self.context_pin_id.push(imp.context_pin_id);
        self.query_id.push(imp.query_id);
    }

    /// Appends a row to the required columns only: the caller extends the optional columns the
    /// table has, and the `c_*` ones.
    pub(crate) fn push_required(&mut self, imp: &Impression) {
        self.impression_id.push(imp.impression_id);
        self.request_id.push(imp.request_id);
        self.ts.push(imp.ts);
        self.user_id.push(imp.user_id);
        self.pin_id.push(imp.pin_id);
        self.surface.push(imp.surface);
    }

    /// Row `i` (without its `c_*` columns).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    #[track_caller]
    pub fn get(&self, i: usize) -> Impression {
        Impression {
            impression_id: self.impression_id[i],
            request_id: self.request_id[i],
            ts: self.ts[i],
            user_id: self.user_id[i],
            pin_id: self.pin_id[i],
            surface: self.surface[i],
            position: optional(&self.position, i),
            context_pin_id: optional(&self.context_pin_id, i),
            query_id: optional(&self.query_id, i),
        }
    }

    /// The context pin of row `i`, if any.
    pub fn context_pin(&self, i: usize) -> Option<i64> {
        optional(&self.context_pin_id, i)
    }

    /// The search query of row `i`, if any.
    pub fn query(&self, i: usize) -> Option<i64> {
        optional(&self.query_id, i)
    }

    /// Every row in order (without `c_*` columns).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Impression> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Checks that every required and `c_*` column has [`Impressions::len`] rows and every
    /// optional one has that many or none.
    pub fn check_lengths(&self) -> Result<()> {
        let n = self.len();
        let required = [
            ("request_id", self.request_id.len()),
            ("ts", self.ts.len()),
            ("user_id", self.user_id.len()),
            ("pin_id", self.pin_id.len()),
            ("surface", self.surface.len()),
        ];
        let optional = [
            ("position", self.position.len()),
            ("context_pin_id", self.context_pin_id.len()),
            ("query_id", self.query_id.len()),
        ];
        let bad = required
            .iter()
            .map(|&(c, len)| (c.to_owned(), len))
            .chain(
                self.categorical
                    .iter()
                    .map(|c| (c.name.clone(), c.values.len())),
            )
            .find(|&(_, len)| len != n)
            .or_else(|| {
                optional
                    .iter()
                    .find(|&&(_, len)| len != n && len != 0)
                    .map(|&(c, len)| (c.to_owned(), len))
            });
        match bad {
            None => Ok(()),
            Some((column, len)) => Err(Error::InvalidArgument {
                name: "impressions",
                message: format!("column `{column}` has {len} rows, impression_id has {n}"),
            }),
        }
    }
}

impl FromIterator<Impression> for Impressions {
    fn from_iter<I: IntoIterator<Item = Impression>>(iter: I) -> Impressions {
        let iter = iter.into_iter();
        let mut t = Impressions::with_capacity(iter.size_hint().0);
        for imp in iter {
            t.push(imp);
        }
        t
    }
}

/// A stable 64-bit id for a string (FNV-1a), for `c_*` columns written as text: the same string
/// always gets the same id, on every machine and in every version.
pub fn stable_string_id(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// One row of the `engagements` table: a click or save of an impression.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    /// The impression engaged with.
    pub impression_id: i64,
    /// Unix seconds.
    pub ts: i64,
    /// Click or save.
    pub kind: EngagementKind,
    /// Seconds spent on the landing page (clicks).
    pub duration_s: Option<f32>,
}

/// One row of the `conversions` table: an offsite conversion as the advertiser reported it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conversion {
    /// Unix seconds.
    pub ts: i64,
    /// Who converted.
    pub user_id: i64,
    /// The pin credited by the advertiser.
    pub pin_id: i64,
    /// What kind of conversion.
    pub kind: ConversionKind,
    /// Its monetary value, where reported.
    pub value: Option<f32>,
}

/// A whole event log in the canonical schema, in memory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventLog {
    /// The pin catalog.
    pub pins: Vec<PinRecord>,
    /// The users.
    pub users: Vec<UserRecord>,
    /// Ads shown.
    pub impressions: Impressions,
    /// Clicks and saves.
    pub engagements: Vec<Engagement>,
    /// Reported conversions.
    pub conversions: Vec<Conversion>,
    /// Names of the pins' `f_*` columns.
    pub pin_dense_names: Vec<String>,
    /// Names of the users' `f_*` columns.
    pub user_dense_names: Vec<String>,
    /// Names of the users' `c_*` columns.
    pub user_categorical_names: Vec<String>,
}

impl EventLog {
    /// Impression, engagement and conversion rows together.
    pub fn num_events(&self) -> usize {
        self.impressions.len() + self.engagements.len() + self.conversions.len()
    }
}

/// What a reader of an event log on disk does with a row holding a bad value (config:
/// `on_bad_row = "error" | "skip"`). It lives with the schema rather than the readers because
/// the run config's `[data]` section names it whether or not the readers are compiled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnBadRow {
    /// Fail with the first bad value, naming its file, row and column.
    #[default]
    Error,
    /// Drop the row, count it per table in the reader's report and keep a few examples.
    Skip,
}
