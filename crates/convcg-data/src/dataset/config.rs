//! How examples and eval queries are cut from a log: the run config's `[data]` section.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, config_error, non_negative};
use crate::labels::{
    ClickWeight, ConversionKindWeights, LabelConfig, LogQMode, StreamingConfig, ValueWeighting,
};
use crate::schema::OnBadRow;

const DAY_S: f64 = 86_400.0;

/// How the eval queries are chosen (`[data] eval_protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EvalProtocol {
    /// `"time"`: the last `eval_window_days` of impressions are the eval window; queries are
    /// (user, surface) pairs with a relevant pin in it, asked as of the window's start; the
    /// impressions before the window train, with its start as the maturity cutoff.
    #[default]
    Time,
    /// `"last_conversion"`: for logs too short (or too coarse in time) to split by time. Each
    /// converting user's last conversion (by time, then file order: the impression id of the
    /// conversion's own record, then conversion row) is a conversion query and each engaged
    /// user's last engagement an engagement query, each with one relevant pin and asked at that
    /// event's moment, so the user's earlier events are its history. A user's impressions and
    /// conversions from the first of their query points on are held out: neither examples, nor
    /// hard negatives, nor labels (training on a user's events after the query would show the
    /// model that query's future). Everything else trains, every label counted as mature (these
    /// logs record conversions as they happen). History bags break ties within a second by
    /// impression id (see [`QueryKey::seq`](super::QueryKey::seq)).
    LastConversion,
    /// `"none"`: no evaluation, for training the model to ship once a protocol above has
    /// measured the recipe. Every impression trains, its conversion label known once
    /// `click_window_days` have passed before the log's last impression; the run writes its
    /// model and skips evaluation.
    None,
}

/// The schema of a window as the config file may give it: a number (days) or text with a unit
/// (the value itself is read by [`days`]).
struct WindowSchema;

impl JsonSchema for WindowSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Window".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "anyOf": [{ "type": "number" }, { "type": "string" }] })
    }
}

/// Reads a window given as days (a number) or as text with a unit ([`parse_window`]).
fn days<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    struct Window;
    impl serde::de::Visitor<'_> for Window {
        type Value = f64;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a number of days, or text with a unit such as \"217s\", \"2h\" or \"7d\"")
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<f64, E> {
            parse_window(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Window)
}

/// Days in a window written as a number and a unit: `s` (seconds), `m` (minutes), `h` (hours),
/// `d` (days) or `w` (weeks), as `"217s"`, `"1.5h"` or `"7d"`; a bare number is days.
///
/// # Errors
/// If the text is not a number followed by one of those units.
fn parse_window(text: &str) -> std::result::Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = (text[..split].trim(), text[split..].trim());
    let bad = || {
        format!(
            "`{text}` is not a window: expected a number of days, or a number and a unit (s, m, h, d or w), such as \"217s\", \"2h\" or \"7d\""
        )
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let per_day = match unit {
        "" | "d" => 1.0,
        "s" => DAY_S,
        "m" => 24.0 * 60.0,
        "h" => 24.0,
        "w" => 1.0 / 7.0,
        _ => return Err(bad()),
    };
    Ok(value / per_day)
}

/// How examples and eval queries are cut from a log (the run config's `[data]` section).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DatasetConfig {
    /// `"time"`, `"last_conversion"` or `"none"`: how eval queries are held out
    /// ([`EvalProtocol`]).
    pub eval_protocol: EvalProtocol,
    /// `"error"` (default) or `"skip"`: what reading a log from disk does with a bad row
    /// (passed to `io::read_log`, of the `io` feature; skipped rows are counted in its report).
    pub on_bad_row: OnBadRow,
    /// Time protocol: the last days of impressions form the eval window; train is before, and
    /// the window's start is the cutoff of conversion-label maturity. Unused by
    /// `last_conversion` (but still validated). Days, or text with a unit (`"217s"`, `"30m"`,
    /// `"2h"`, `"7d"`), as every window here.
    #[serde(deserialize_with = "days")]
    #[schemars(with = "WindowSchema")]
    pub eval_window_days: f64,
    /// Click-through attribution window; also the maturity window of conversion labels: an
    /// impression's conversion label is known (not masked) only once this long has passed.
    #[serde(deserialize_with = "days")]
    #[schemars(with = "WindowSchema")]
    pub click_window_days: f64,
    /// View-through attribution window.
    #[serde(deserialize_with = "days")]
    #[schemars(with = "WindowSchema")]
    pub view_window_days: f64,
    /// Length of the recent-engagement bags.
    pub history_len: usize,
    /// Width of each pin's identity code (0: none). Each pin gets a fixed pseudo-random unit
    /// vector drawn from its id, and each query the mean code of its recent-pins bag, as the
    /// last dense columns of both towers: an id signal every pin has, trained on or not.
    pub id_code_dim: usize,
    /// Scale of the engagement task in a row's weight.
    pub engagement_weight: f32,
    /// Scale of the conversion task in a row's weight.
    pub conversion_weight: f32,
    /// Weigh each engagement positive by its advertiser's conversions per engagement (on the
    /// training rows whose conversion label is known) relative to the catalogue's, the
    /// advertiser's rate shrunk towards the catalogue's by this many engagements' worth of it
    /// (0: off, every engagement weighs as its click or save says).
    pub advertiser_rate_prior: f32,
    /// Click weight from the landing-page duration.
    pub click_weight: ClickWeight,
    /// Engagement weight of a save.
    pub save_weight: f32,
    /// Conversion weight by kind; several conversions on one impression take the largest.
    pub conversion_kind_weights: ConversionKindWeights,
    /// `"none"` or `"log"`: scale a conversion's weight by `1 + ln(1 + value)`.
    pub value_weighting: ValueWeighting,
    /// Hard negatives per positive, `0..=8` (0: in-batch negatives only).
    pub hard_negatives_per_positive: usize,
    /// Seed of the hard-negative draw.
    pub hard_negative_seed: u64,
    /// `"exact"` or `"streaming"` sampling probabilities for the logQ correction.
    pub log_q: LogQMode,
    /// Settings of the streaming estimate.
    pub streaming_log_q: StreamingConfig,
    /// Eval queries kept per task; a seeded subsample beyond this, counted.
    pub max_eval_queries: usize,
    /// Seed of that subsample.
    pub eval_seed: u64,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        let labels = LabelConfig::default();
        DatasetConfig {
            eval_protocol: EvalProtocol::Time,
            on_bad_row: OnBadRow::Error,
            eval_window_days: 7.0,
            click_window_days: 7.0,
            view_window_days: 1.0,
            history_len: 20,
            id_code_dim: 0,
            engagement_weight: 1.0,
            conversion_weight: 1.0,
            advertiser_rate_prior: 0.0,
            click_weight: labels.click_weight,
            save_weight: labels.save_weight,
            conversion_kind_weights: labels.conversion_kind_weights,
            value_weighting: labels.value_weighting,
            hard_negatives_per_positive: labels.hard_negatives_per_positive,
            hard_negative_seed: labels.seed,
            log_q: LogQMode::Exact,
            streaming_log_q: StreamingConfig::default(),
            max_eval_queries: 20_000,
            eval_seed: 0,
        }
    }
}

/// Longest history bag accepted: far beyond any use (the importers pick 5..=50), and small
/// enough that a batch's bag buffers cannot overflow.
const MAX_HISTORY_LEN: usize = 1000;

/// Widest identity code accepted: past this, a code costs more than the id tables it backs up.
const MAX_ID_CODE_DIM: usize = 1024;

/// Longest window accepted, days: far beyond any use, and safely inside i64 seconds.
const MAX_WINDOW_DAYS: f64 = 36_500.0;

impl DatasetConfig {
    /// Checks every key; the error names the bad key, its value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(self.eval_window_days.is_finite()
            && self.eval_window_days > 0.0
            && self.eval_window_days <= MAX_WINDOW_DAYS)
        {
            return Err(config_error(
                "eval_window_days",
                format!(
                    "must be a number in (0, {MAX_WINDOW_DAYS}], got {}",
                    self.eval_window_days
                ),
            ));
        }
        for (key, v) in [
            ("click_window_days", self.click_window_days),
            ("view_window_days", self.view_window_days),
        ] {
            if !(v.is_finite() && (0.0..=MAX_WINDOW_DAYS).contains(&v)) {
                return Err(config_error(
                    key,
                    format!("must be a number in [0, {MAX_WINDOW_DAYS}], got {v}"),
                ));
            }
        }
        if self.history_len > MAX_HISTORY_LEN {
            return Err(config_error(
                "history_len",
                format!("must be in 0..={MAX_HISTORY_LEN}, got {}", self.history_len),
            ));
        }
        if self.id_code_dim > MAX_ID_CODE_DIM {
            return Err(config_error(
                "id_code_dim",
                format!("must be in 0..={MAX_ID_CODE_DIM}, got {}", self.id_code_dim),
            ));
        }
        non_negative("engagement_weight", self.engagement_weight)?;
        non_negative("conversion_weight", self.conversion_weight)?;
        non_negative("advertiser_rate_prior", self.advertiser_rate_prior)?;
        if self.max_eval_queries == 0 {
            return Err(config_error(
                "max_eval_queries",
                "must be at least 1, got 0",
            ));
        }
        self.label_config().validate()?;
        self.streaming_log_q.validate()
    }

    /// The labelling rules' settings these keys describe.
    pub fn label_config(&self) -> LabelConfig {
        LabelConfig {
            click_window_s: window_s(self.click_window_days),
            view_window_s: window_s(self.view_window_days),
            click_weight: self.click_weight,
            save_weight: self.save_weight,
            conversion_kind_weights: self.conversion_kind_weights,
            value_weighting: self.value_weighting,
            hard_negatives_per_positive: self.hard_negatives_per_positive,
            seed: self.hard_negative_seed,
        }
    }
}

pub(crate) fn window_s(days: f64) -> i64 {
    (days * DAY_S).round() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_as_days_or_with_a_unit() {
        for (text, days) in [
            ("7", 7.0),
            ("7d", 7.0),
            (" 2h ", 2.0 / 24.0),
            ("217s", 217.0 / DAY_S),
            ("30m", 30.0 / 1440.0),
            ("2w", 14.0),
            ("0.5 d", 0.5),
        ] {
            let got = parse_window(text).unwrap();
            assert!((got - days).abs() < 1e-12, "{text}: {got} != {days}");
        }
        for bad in ["", "h", "7x", "7 days", "two days"] {
            let err = parse_window(bad).unwrap_err();
            assert!(
                err.contains("not a window") && err.contains("\"2h\""),
                "{bad}: {err}"
            );
        }
        let cfg: DatasetConfig = toml::from_str(
            "eval_window_days = \"36h\"\nclick_window_days = 3\nview_window_days = 0.25\n",
        )
        .unwrap();
        assert_eq!(cfg.eval_window_days, 1.5);
        assert_eq!(cfg.click_window_days, 3.0);
        assert_eq!(cfg.view_window_days, 0.25);
        let err = toml::from_str::<DatasetConfig>("click_window_days = \"3 fortnights\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a window"), "{err}");
    }
}
