//! The synthetic marketplace's ground truth: the true click and conversion
//! probabilities of every (user, pin, surface), for clean metrics and the oracle.

use std::fmt;

use crate::schema::Surface;
use crate::synth::SynthConfig;

/// Ground truth: indices are positions in `log.users` / `log.pins`.
///
/// With `s = surface`, `c = <u_click, v_click>` and `k = <u_conv, v_conv>`:
/// `p_click = sigmoid(bias_s + a c + quality_pin)`,
/// `p_conversion_given_click = (1 - accidental) sigmoid(conv_bias_pin + g k)`, and an
/// unclicked impression converts (view-through) with `view_through_rate` times the latter's
/// sigmoid, so `p_conversion = p_click p_cgc + (1 - p_click) p_view`. These are exactly the
/// probabilities the generator draws from.
#[derive(Clone)]
pub struct GroundTruth {
    pub(crate) dim: usize,
    pub(crate) user_click: Vec<f32>,
    pub(crate) user_conv: Vec<f32>,
    pub(crate) pin_click: Vec<f32>,
    pub(crate) pin_conv: Vec<f32>,
    pub(crate) pin_quality: Vec<f32>,
    pub(crate) pin_conv_bias: Vec<f32>,
    pub(crate) pin_advertiser: Vec<u32>,
    pub(crate) advertiser_reporting_rate: Vec<f32>,
    pub(crate) surface_bias: [f32; 3],
    pub(crate) click_scale: f32,
    pub(crate) conv_scale: f32,
    pub(crate) genuine_click_share: f32,
    pub(crate) view_through_rate: f32,
    pub(crate) record: GenerationRecord,
}

/// What the generator did beside the log: kept for [`crate::Marketplace::realised`].
#[derive(Clone, Debug, Default)]
pub(crate) struct GenerationRecord {
    pub(crate) config: SynthConfig,
    pub(crate) seed: u64,
    pub(crate) impressions_per_surface: [u64; 3],
    pub(crate) clicks_per_surface: [u64; 3],
    pub(crate) accidental_clicks: u64,
    /// Delay of every logged true conversion, days.
    pub(crate) delays_days: Vec<f32>,
    pub(crate) view_through_conversions: u64,
    pub(crate) reported_genuine: u64,
    pub(crate) misattributed: u64,
    pub(crate) fake: u64,
}

impl fmt::Debug for GroundTruth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroundTruth")
            .field("num_users", &self.num_users())
            .field("num_pins", &self.num_pins())
            .field("dim", &self.dim)
            .finish_non_exhaustive()
    }
}

#[inline]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl GroundTruth {
    /// Users.
    pub fn num_users(&self) -> usize {
        self.user_click.len() / self.dim
    }

    /// Pins.
    pub fn num_pins(&self) -> usize {
        self.pin_click.len() / self.dim
    }

    /// Dimension of the latent factors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    fn row(v: &[f32], i: u32, d: usize) -> &[f32] {
        let i = i as usize;
        &v[i * d..(i + 1) * d]
    }

    /// `<u_click, v_click>`: the click affinity of a user and a pin (both unit vectors).
    pub fn click_affinity(&self, user: u32, pin: u32) -> f32 {
        let d = self.dim;
        dot(
            Self::row(&self.user_click, user, d),
            Self::row(&self.pin_click, pin, d),
        )
    }

    /// `<u_conv, v_conv>`: the conversion affinity of a user and a pin (both unit vectors).
    pub fn conversion_affinity(&self, user: u32, pin: u32) -> f32 {
        let d = self.dim;
        dot(
            Self::row(&self.user_conv, user, d),
            Self::row(&self.pin_conv, pin, d),
        )
    }

    /// The click logit: `sigmoid` of it is [`GroundTruth::p_click`].
    pub fn click_logit(&self, user: u32, pin: u32, surface: Surface) -> f32 {
        self.surface_bias[surface.index()]
            + self.click_scale * self.click_affinity(user, pin)
            + self.pin_quality[pin as usize]
    }

    /// Probability that an impression of `pin` to `user` on `surface` is clicked.
    pub fn p_click(&self, user: u32, pin: u32, surface: Surface) -> f32 {
        sigmoid(self.click_logit(user, pin, surface))
    }

    /// Conversion probability of a genuine (not accidental) click.
    pub(crate) fn p_conversion_given_genuine_click(&self, user: u32, pin: u32) -> f32 {
        sigmoid(
            self.pin_conv_bias[pin as usize]
                + self.conv_scale * self.conversion_affinity(user, pin),
        )
    }

    /// Probability that a click of `pin` by `user` leads to a conversion.
    pub fn p_conversion_given_click(&self, user: u32, pin: u32) -> f32 {
        self.genuine_click_share * self.p_conversion_given_genuine_click(user, pin)
    }

    /// Probability that an unclicked impression leads to a (view-through) conversion.
    pub fn p_view_through(&self, user: u32, pin: u32) -> f32 {
        self.view_through_rate * self.p_conversion_given_genuine_click(user, pin)
    }

    /// True probability that an impression of `pin` to `user` on `surface` leads to a conversion.
    pub fn p_conversion(&self, user: u32, pin: u32, surface: Surface) -> f32 {
        let pc = self.p_click(user, pin, surface);
        let g = self.p_conversion_given_genuine_click(user, pin);
        pc * self.genuine_click_share * g + (1.0 - pc) * self.view_through_rate * g
    }

    /// Share of the pin's advertiser's true conversions that it reports.
    pub fn reporting_rate(&self, pin: u32) -> f32 {
        self.advertiser_reporting_rate[self.pin_advertiser[pin as usize] as usize]
    }

    /// [`GroundTruth::p_conversion`] for every pin (`out.len() == num_pins`).
    ///
    /// # Panics
    /// If `out.len() != self.num_pins()` or `user` is out of range.
    #[track_caller]
    pub fn conversion_scores(&self, user: u32, surface: Surface, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.num_pins(),
            "conversion_scores: out must have one slot per pin"
        );
        let d = self.dim;
        let uc = Self::row(&self.user_click, user, d);
        let uv = Self::row(&self.user_conv, user, d);
        let bias = self.surface_bias[surface.index()];
        let pins = self
            .pin_click
            .chunks_exact(d)
            .zip(self.pin_conv.chunks_exact(d))
            .zip(self.pin_quality.iter().zip(&self.pin_conv_bias));
        for (o, ((vc, vv), (&q, &cb))) in out.iter_mut().zip(pins) {
            let pc = sigmoid(bias + self.click_scale * dot(uc, vc) + q);
            let g = sigmoid(cb + self.conv_scale * dot(uv, vv));
            *o = pc * self.genuine_click_share * g + (1.0 - pc) * self.view_through_rate * g;
        }
    }

    /// [`GroundTruth::p_click`] for every pin (`out.len() == num_pins`), for the engagement oracle.
    ///
    /// # Panics
    /// If `out` does not have one slot per pin.
    pub fn click_scores(&self, user: u32, surface: Surface, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.num_pins(),
            "click_scores: out must have one slot per pin"
        );
        let d = self.dim;
        let uc = Self::row(&self.user_click, user, d);
        let bias = self.surface_bias[surface.index()];
        let pins = self.pin_click.chunks_exact(d).zip(&self.pin_quality);
        for (o, (vc, &q)) in out.iter_mut().zip(pins) {
            *o = sigmoid(bias + self.click_scale * dot(uc, vc) + q);
        }
    }
}
