//! The labelling rules' settings: windows, weights, hard negatives.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, config_error, non_negative};
use crate::schema::ConversionKind;

/// The most hard negatives a positive can draw; caps `hard_negatives_per_positive` so that an
/// example's hard negatives fit inline ([`HardNegatives`](crate::HardNegatives)).
pub const MAX_HARD_NEGATIVES: usize = 8;

/// How a click's landing-page duration becomes its weight:
/// `clamp(ln(1 + d / scale_s) / ln(1 + reference_s / scale_s), 0, max)`.
///
/// Short clicks (accidental taps) weigh near 0, a click of `reference_s` weighs exactly 1, and
/// the log keeps very long dwell times from dominating (capped at `max`). A click without a
/// duration weighs 1, a negative duration counts as 0 and a NaN one as missing. With
/// `by_duration = false` every click weighs 1 (the ablation baseline's unweighted clicks).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ClickWeight {
    /// Weigh clicks by duration (the default), or every click 1.
    pub by_duration: bool,
    /// Seconds below which the log is nearly linear (> 0).
    pub scale_s: f32,
    /// Duration that weighs exactly 1, seconds (> 0).
    pub reference_s: f32,
    /// The largest weight (>= 0).
    pub max: f32,
}

impl Default for ClickWeight {
    fn default() -> Self {
        ClickWeight {
            by_duration: true,
            scale_s: 1.0,
            reference_s: 30.0,
            max: 3.0,
        }
    }
}

impl ClickWeight {
    /// The weight of one click of this duration (see the type's formula).
    pub fn weight(&self, duration_s: Option<f32>) -> f32 {
        let Some(d) = duration_s.filter(|d| self.by_duration && !d.is_nan()) else {
            return 1.0;
        };
        let d = f64::from(d.max(0.0));
        let scale = f64::from(self.scale_s);
        let w = (d / scale).ln_1p() / (f64::from(self.reference_s) / scale).ln_1p();
        // `min` first: an infinite duration gives +inf, which the cap turns into `max`.
        (w.min(f64::from(self.max)).max(0.0)) as f32
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("click_weight.scale_s", self.scale_s),
            ("click_weight.reference_s", self.reference_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(config_error(
                    key,
                    format!("must be a finite number > 0, got {v}"),
                ));
            }
        }
        non_negative("click_weight.max", self.max)
    }
}

/// Weight of an attributed conversion by its kind (`[data.conversion_kind_weights]`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ConversionKindWeights {
    /// A completed purchase.
    pub purchase: f32,
    /// A started checkout.
    pub checkout: f32,
    /// An item added to the cart.
    pub add_to_cart: f32,
    /// An account sign-up.
    pub signup: f32,
    /// A submitted lead form.
    pub lead: f32,
}

impl Default for ConversionKindWeights {
    fn default() -> Self {
        ConversionKindWeights {
            purchase: 1.0,
            checkout: 0.7,
            add_to_cart: 0.4,
            signup: 0.5,
            lead: 0.5,
        }
    }
}

impl ConversionKindWeights {
    /// The weight of this kind.
    pub fn get(&self, kind: ConversionKind) -> f32 {
        match kind {
            ConversionKind::Purchase => self.purchase,
            ConversionKind::Checkout => self.checkout,
            ConversionKind::AddToCart => self.add_to_cart,
            ConversionKind::Signup => self.signup,
            ConversionKind::Lead => self.lead,
        }
    }

    fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("conversion_kind_weights.purchase", self.purchase),
            ("conversion_kind_weights.checkout", self.checkout),
            ("conversion_kind_weights.add_to_cart", self.add_to_cart),
            ("conversion_kind_weights.signup", self.signup),
            ("conversion_kind_weights.lead", self.lead),
        ] {
            non_negative(key, v)?;
        }
        Ok(())
    }
}

/// Whether a conversion's reported value scales its weight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueWeighting {
    /// The value is ignored.
    #[default]
    None,
    /// A conversion with a value weighs `1 + ln(1 + max(value, 0))` times more; one without
    /// a value (or with a NaN one) is unchanged.
    Log,
}

impl ValueWeighting {
    /// The factor a conversion of this value gets.
    pub fn factor(self, value: Option<f32>) -> f32 {
        match (self, value) {
            (ValueWeighting::Log, Some(v)) if !v.is_nan() => {
                (1.0 + f64::from(v.max(0.0)).ln_1p()) as f32
            }
            _ => 1.0,
        }
    }
}

/// The labelling rules' settings (see [`label`](crate::label) for the rules themselves).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LabelConfig {
    /// Click-through attribution window, seconds; also the maturity window of conversion labels.
    pub click_window_s: i64,
    /// View-through attribution window, seconds.
    pub view_window_s: i64,
    /// Click weight from duration.
    pub click_weight: ClickWeight,
    /// Weight of a save.
    pub save_weight: f32,
    /// Weight of a conversion by kind.
    pub conversion_kind_weights: ConversionKindWeights,
    /// Optional scaling by the conversion's value.
    pub value_weighting: ValueWeighting,
    /// Hard negatives drawn per positive, `0..=MAX_HARD_NEGATIVES` (0: none).
    pub hard_negatives_per_positive: usize,
    /// Seed of the hard-negative draw.
    pub seed: u64,
}

impl Default for LabelConfig {
    fn default() -> Self {
        LabelConfig {
            click_window_s: 7 * 86_400,
            view_window_s: 86_400,
            click_weight: ClickWeight::default(),
            save_weight: 1.0,
            conversion_kind_weights: ConversionKindWeights::default(),
            value_weighting: ValueWeighting::None,
            hard_negatives_per_positive: 1,
            seed: 0,
        }
    }
}

impl LabelConfig {
    /// The conversion weight of one attributed conversion: kind weight x value factor.
    pub fn conversion_weight(&self, kind: ConversionKind, value: Option<f32>) -> f32 {
        self.conversion_kind_weights.get(kind) * self.value_weighting.factor(value)
    }

    /// Checks every value; the error names the key (as in the run config's `[data]` section),
    /// the value and what is allowed.
    pub fn validate(&self) -> Result<()> {
        for (key, v) in [
            ("click_window_days", self.click_window_s),
            ("view_window_days", self.view_window_s),
        ] {
            if v < 0 {
                return Err(config_error(key, format!("must be >= 0, got {v} s")));
            }
        }
        self.click_weight.validate()?;
        non_negative("save_weight", self.save_weight)?;
        self.conversion_kind_weights.validate()?;
        if self.hard_negatives_per_positive > MAX_HARD_NEGATIVES {
            return Err(config_error(
                "hard_negatives_per_positive",
                format!(
                    "must be in 0..={MAX_HARD_NEGATIVES}, got {}",
                    self.hard_negatives_per_positive
                ),
            ));
        }
        Ok(())
    }
}
