//! The canonical event schema of design.md: one record type per table.

use std::fmt;
use std::str::FromStr;

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
    pub impressions: Vec<Impression>,
    /// Clicks and saves.
    pub engagements: Vec<Engagement>,
    /// Reported conversions.
    pub conversions: Vec<Conversion>,
    /// Names of the pins' `f_*` columns.
    pub pin_dense_names: Vec<String>,
    /// Names of the users' `f_*` columns.
    pub user_dense_names: Vec<String>,
}

impl EventLog {
    /// Impression, engagement and conversion rows together.
    pub fn num_events(&self) -> usize {
        self.impressions.len() + self.engagements.len() + self.conversions.len()
    }
}
