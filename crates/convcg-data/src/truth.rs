//! The synthetic marketplace's ground truth: the true click and conversion
//! probabilities of every (user, pin, surface), for clean metrics and the oracle, and the
//! incumbent's exposure policy, for the policy-aware oracle.

use std::fmt;

use convcg_kernels::vmath::{fast_exp, fast_ln};

use crate::dataset::QueryKey;
use crate::schema::Surface;
use crate::synth::SynthConfig;
use crate::synth::serve::ON_INTEREST;
use crate::synth::world::QUERY_ID_BASE;

/// Bins of the histogram of candidates' scaled log auction values on which the selection threshold
/// is solved: fine enough (a few hundredths of a nat over the values' range at the default
/// temperature) that binning moves no pin's selection probability by more than a few percent of
/// itself, coarse enough to be cheap per query.
const THRESHOLD_BINS: usize = 1024;
/// Most steps of the threshold's search: the bracket is about 100 nats wide, so even 60 halvings
/// alone would leave an error far below the bins' width; Newton steps end it in a few.
const THRESHOLD_STEPS: usize = 60;
/// The search stops once the expected number shown is within this share of the slots.
const THRESHOLD_TOLERANCE: f64 = 1e-6;

/// Ground truth: indices are positions in `log.users` / `log.pins`.
///
/// With `s = surface`, `c = <u_click, v_click>` and `k = <u_conv, v_conv>`:
/// `p_click = sigmoid(bias_s + a c + quality_pin)`,
/// `p_conversion_given_click = (1 - accidental) sigmoid(conv_bias_pin + intent_user + g k)`, and
/// an unclicked impression converts (view-through) with `view_through_rate` times the latter's
/// sigmoid, so `p_conversion = p_click p_cgc + (1 - p_click) p_view`. These are exactly the
/// probabilities the generator draws from. `quality_pin` includes an inspiration pin's click lift
/// and `conv_bias_pin` its advertiser's conversion propensity, its price effect and an inspiration
/// pin's conversion drop.
#[derive(Clone)]
pub struct GroundTruth {
    pub(crate) dim: usize,
    pub(crate) user_click: Vec<f32>,
    pub(crate) user_conv: Vec<f32>,
    pub(crate) pin_click: Vec<f32>,
    pub(crate) pin_conv: Vec<f32>,
    pub(crate) pin_quality: Vec<f32>,
    pub(crate) pin_conv_bias: Vec<f32>,
    /// Whether each pin is an inspiration pin (clicked above its category's rate, rarely bought).
    pub(crate) pin_inspiration: Vec<bool>,
    /// Each user's purchase intent: added to the conversion logit.
    pub(crate) user_intent: Vec<f32>,
    pub(crate) pin_advertiser: Vec<u32>,
    /// Cost-per-click bid of each pin (`synth::bids`).
    pub(crate) pin_bid: Vec<f32>,
    /// Expected value of one conversion of each pin (`synth::bids`).
    pub(crate) pin_value: Vec<f32>,
    /// Target cost per action of each advertiser running a conversion campaign (`synth::bids`).
    pub(crate) advertiser_target_cpa: Vec<Option<f32>>,
    /// Per pin, the log of what its auction value multiplies the click probability by, without
    /// the conversion probability: `ln bid` (click campaign) or `ln(target_cpa x genuine click
    /// share)` (conversion campaign).
    pub(crate) pin_value_base: Vec<f32>,
    /// Per pin, 1 where the conversion probability enters its auction value (a conversion
    /// campaign), else 0.
    pub(crate) pin_value_converts: Vec<f32>,
    /// Share of auctions each advertiser takes part in (budget pacing, `synth::bids`).
    pub(crate) advertiser_participation: Vec<f32>,
    /// Expected requests of each user over the log's days (proportional to their activity).
    pub(crate) user_request_rate: Vec<f64>,
    pub(crate) advertiser_reporting_rate: Vec<f32>,
    pub(crate) surface_bias: [f32; 3],
    pub(crate) click_scale: f32,
    pub(crate) conv_scale: f32,
    pub(crate) genuine_click_share: f32,
    pub(crate) view_through_rate: f32,
    pub(crate) exposure: Exposure,
    pub(crate) record: GenerationRecord,
}

/// What the incumbent draws candidates from (see `synth::serve`), in the closed form the
/// policy-aware oracle needs: a few floats per pin, per category, per user and per query.
#[derive(Clone, Debug)]
pub(crate) struct Exposure {
    /// Category of each pin.
    pub(crate) pin_category: Vec<u32>,
    /// `p_j`: probability that one popularity draw yields pin `j`.
    pub(crate) pop_share: Vec<f32>,
    /// `q_j`: probability that one draw from pin `j`'s category yields it.
    pub(crate) category_share: Vec<f32>,
    /// `1 - (1 - q_j)^n_cat`: pin `j` is among the `interest_candidates` draws of a request
    /// whose draws all come from its category (related pins, search).
    pub(crate) category_inclusion: Vec<f32>,
    /// `1 - (1 - p_j)^n_pop` for the home feed's popularity draws, precomputed because every
    /// pin needs it on every query.
    pub(crate) pop_inclusion_home: Vec<f32>,
    /// The same for related pins and search, which draw alike.
    pub(crate) pop_inclusion_context: Vec<f32>,
    /// Probability that the category sampler (the off-interest contexts) draws each category.
    pub(crate) category_prior: Vec<f32>,
    /// Categories without pins: serving replaces a draw from one by a popularity draw.
    pub(crate) category_empty: Vec<bool>,
    /// User `u`'s interests are `interests[interest_offsets[u]..interest_offsets[u + 1]]`.
    pub(crate) interest_offsets: Vec<u32>,
    /// (category, mixture weight) of every user's interests, weights summing to 1 per user.
    pub(crate) interests: Vec<(u32, f32)>,
    /// Category of each search query, by `query_id - QUERY_ID_BASE`.
    pub(crate) query_category: Vec<u32>,
}

/// `1 - (1 - x)^n`, accurate for the tiny per-draw probabilities of a large catalog.
fn inclusion(x: f64, n: usize) -> f64 {
    -(n as f64 * (-x.min(1.0)).ln_1p()).exp_m1()
}

impl Exposure {
    /// From the world's samplers: pin popularity weights, category weights (the category sampler's),
    /// each user's interests as (category, cumulative weight) and each category's queries.
    pub(crate) fn new(
        cfg: &SynthConfig,
        pin_category: Vec<u32>,
        popularity: &[f64],
        category_weight: &[f64],
        user_interests: &[Vec<(u32, f64)>],
        category_queries: &[Vec<u32>],
    ) -> Exposure {
        let nc = category_weight.len();
        let mut category_total = vec![0f64; nc];
        for (&c, &w) in pin_category.iter().zip(popularity) {
            category_total[c as usize] += w;
        }
        let total: f64 = popularity.iter().sum();
        let pop_share: Vec<f64> = popularity.iter().map(|w| w / total).collect();
        let category_share: Vec<f64> = pin_category
            .iter()
            .zip(popularity)
            .map(|(&c, w)| w / category_total[c as usize])
            .collect();
        let per_pin = |v: &[f64], n: usize| -> Vec<f32> {
            v.iter().map(|&x| inclusion(x, n) as f32).collect()
        };
        let weight_total: f64 = category_weight.iter().sum();
        let mut interest_offsets = Vec::with_capacity(user_interests.len() + 1);
        let mut interests = Vec::new();
        interest_offsets.push(0u32);
        for user in user_interests {
            let mut prev = 0.0;
            for &(c, cum) in user {
                interests.push((c, (cum - prev) as f32));
                prev = cum;
            }
            interest_offsets.push(interests.len() as u32);
        }
        let mut query_category = vec![0u32; category_queries.iter().map(Vec::len).sum()];
        for (c, qs) in category_queries.iter().enumerate() {
            for &q in qs {
                query_category[q as usize] = c as u32;
            }
        }
        Exposure {
            category_inclusion: per_pin(&category_share, cfg.interest_candidates),
            pop_inclusion_home: per_pin(&pop_share, cfg.popularity_draws(Surface::HomeFeed)),
            pop_inclusion_context: per_pin(&pop_share, cfg.popularity_draws(Surface::Related)),
            pop_share: pop_share.iter().map(|&x| x as f32).collect(),
            category_share: category_share.iter().map(|&x| x as f32).collect(),
            category_prior: category_weight
                .iter()
                .map(|w| (w / weight_total) as f32)
                .collect(),
            category_empty: category_total.iter().map(|&t| t <= 0.0).collect(),
            pin_category,
            interest_offsets,
            interests,
            query_category,
        }
    }

    pub(crate) fn interests(&self, user: u32) -> &[(u32, f32)] {
        let u = user as usize;
        &self.interests[self.interest_offsets[u] as usize..self.interest_offsets[u + 1] as usize]
    }

    fn pop_inclusion(&self, surface: Surface) -> &[f32] {
        match surface {
            Surface::HomeFeed => &self.pop_inclusion_home,
            Surface::Related | Surface::Search => &self.pop_inclusion_context,
        }
    }
}

/// How a request's `interest_candidates` non-popularity draws pick their category, with the
/// weight of each category in `Exposure`'s order.
enum CategoryDraws {
    /// Every draw picks its own category (the home feed's interest mixture); `popular` is the
    /// weight of empty categories, whose draws become popularity draws.
    PerDraw { weights: Vec<f32>, popular: f32 },
    /// One category for all the request's draws (related pins, search), drawn with these
    /// weights (one weight 1 when the context is known); `popular` as above.
    PerRequest { weights: Vec<f32>, popular: f32 },
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

/// `ln sigmoid(x)`, without overflow for very negative `x`.
#[inline]
fn ln_sigmoid(x: f32) -> f32 {
    if x < -30.0 { x } else { -(-x).exp().ln_1p() }
}

/// `<a, b>` summed in eight lanes, so that it vectorises.
#[inline]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
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

    /// The seed the marketplace was generated with.
    pub fn seed(&self) -> u64 {
        self.record.seed
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

    /// The conversion logit of a genuine click: `sigmoid` of it is
    /// [`GroundTruth::p_conversion_given_genuine_click`].
    pub(crate) fn conversion_logit(&self, user: u32, pin: u32) -> f32 {
        self.pin_conv_bias[pin as usize]
            + self.user_intent[user as usize]
            + self.conv_scale * self.conversion_affinity(user, pin)
    }

    /// Conversion probability of a genuine (not accidental) click.
    pub(crate) fn p_conversion_given_genuine_click(&self, user: u32, pin: u32) -> f32 {
        sigmoid(self.conversion_logit(user, pin))
    }

    /// The natural log of the expected value per impression both auctions rank `pin` by, from
    /// its click logit and (called only for a conversion campaign) the conversion logit of a
    /// genuine click: `ln(bid x p_click)` for a click campaign,
    /// `ln(target_cpa x p_click x p_conv|click)` for a conversion campaign.
    pub(crate) fn log_auction_value(
        &self,
        pin: u32,
        click_logit: f32,
        conversion_logit: impl FnOnce() -> f32,
    ) -> f32 {
        let p = pin as usize;
        let v = ln_sigmoid(click_logit) + self.pin_value_base[p];
        if self.pin_value_converts[p] > 0.0 {
            v + ln_sigmoid(conversion_logit())
        } else {
            v
        }
    }

    /// [`GroundTruth::pin_value_base`] and [`GroundTruth::pin_value_converts`] from the bids
    /// and target CPAs.
    pub(crate) fn value_bases(
        pin_advertiser: &[u32],
        pin_bid: &[f32],
        target_cpa: &[Option<f32>],
        genuine_click_share: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        pin_advertiser
            .iter()
            .zip(pin_bid)
            .map(|(&a, &bid)| match target_cpa[a as usize] {
                None => (bid.ln(), 0.0),
                Some(t) => ((t * genuine_click_share).ln(), 1.0),
            })
            .unzip()
    }

    /// Expected value per impression of `pin` to `user` on `surface` in both auctions:
    /// `bid x p_click` for a click campaign, `target_cpa x p_click x p_conv|click` for a
    /// conversion campaign.
    pub fn auction_value(&self, user: u32, pin: u32, surface: Surface) -> f32 {
        self.log_auction_value(pin, self.click_logit(user, pin, surface), || {
            self.conversion_logit(user, pin)
        })
        .exp()
    }

    /// The target cost per action of the pin's advertiser if it runs a conversion campaign, `None`
    /// for a click campaign.
    ///
    /// # Panics
    /// If `pin` is out of range.
    pub fn target_cpa(&self, pin: u32) -> Option<f32> {
        self.advertiser_target_cpa[self.pin_advertiser[pin as usize] as usize]
    }

    /// Share of the incumbent's auctions the pin's advertiser takes part in (below 1 where its
    /// budget binds).
    pub fn participation(&self, pin: u32) -> f32 {
        self.advertiser_participation[self.pin_advertiser[pin as usize] as usize]
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

    /// The pin's cost-per-click bid in the downstream auction, in the prices' currency: a
    /// lognormal around its advertiser's level, higher for dearer pins (see
    /// [`SynthConfig::bid_median`] and the keys after it). Drawn from a random stream of its own,
    /// so it changes no event of the log.
    ///
    /// # Panics
    /// If `pin` is out of range.
    pub fn bid(&self, pin: u32) -> f32 {
        self.pin_bid[pin as usize]
    }

    /// Expected value a conversion of `pin` reports: its price times the generator's mean value
    /// per unit of price (purchases and checkouts report the price times a basket factor of mean
    /// `exp(0.045)`, adds to cart the price, sign-ups and leads nothing); 0 for a pin without a
    /// price.
    ///
    /// # Panics
    /// If `pin` is out of range.
    pub fn conversion_value(&self, pin: u32) -> f32 {
        self.pin_value[pin as usize]
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
        let intent = self.user_intent[user as usize];
        let pins = self
            .pin_click
            .chunks_exact(d)
            .zip(self.pin_conv.chunks_exact(d))
            .zip(self.pin_quality.iter().zip(&self.pin_conv_bias));
        for (o, ((vc, vv), (&q, &cb))) in out.iter_mut().zip(pins) {
            let pc = sigmoid(bias + self.click_scale * dot(uc, vc) + q);
            let g = sigmoid(cb + intent + self.conv_scale * dot(uv, vv));
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
    /// Where a request's category draws come from, given its context (see [`CategoryDraws`]).
    fn category_draws(&self, key: &QueryKey) -> CategoryDraws {
        let e = &self.exposure;
        let nc = e.category_prior.len();
        let mut weights = vec![0f32; nc];
        let mut popular = 0f32;
        let mut add = |weights: &mut [f32], c: u32, w: f32| {
            if e.category_empty[c as usize] {
                popular += w;
            } else {
                weights[c as usize] += w;
            }
        };
        let known = match key.surface {
            Surface::HomeFeed => {
                for &(c, w) in e.interests(key.user) {
                    add(&mut weights, c, w);
                }
                return CategoryDraws::PerDraw { weights, popular };
            }
            Surface::Related => key
                .context_pin
                .and_then(|p| e.pin_category.get(p as usize).copied()),
            Surface::Search => key
                .query_id
                .and_then(|q| usize::try_from(q - QUERY_ID_BASE).ok())
                .and_then(|q| e.query_category.get(q).copied()),
        };
        match known {
            Some(c) => add(&mut weights, c, 1.0),
            // Unknown context: the category serving would draw it from (the user's interests
            // ON_INTEREST of the time, the category sampler otherwise).
            None => {
                let on = ON_INTEREST as f32;
                for &(c, w) in e.interests(key.user) {
                    add(&mut weights, c, on * w);
                }
                for (c, &w) in e.category_prior.iter().enumerate() {
                    add(&mut weights, c as u32, (1.0 - on) * w);
                }
            }
        }
        CategoryDraws::PerRequest { weights, popular }
    }

    /// `out[j] = P(pin j shown | key) * outcome(p_click, p_conv|genuine click)` of pin `j`: the
    /// policy-aware oracle's expected outcomes per request. See
    /// [`GroundTruth::expected_conversion_scores`] for the exposure model.
    fn expected_scores(&self, key: &QueryKey, out: &mut [f32], outcome: impl Fn(f32, f32) -> f32) {
        let e = &self.exposure;
        let cfg = &self.record.config;
        let n_cat = cfg.interest_candidates;
        let temp = cfg.serving_temperature as f32;
        let draws = self.category_draws(key);
        // A context pin is removed from its own request's candidates.
        let excluded = match key.surface {
            Surface::Related => key.context_pin,
            Surface::HomeFeed | Surface::Search => None,
        };
        let pop_inclusion = e.pop_inclusion(key.surface);
        let n = out.len();
        // Pass 1: each pin's probability of entering the auction (a candidate whose advertiser
        // takes part) and its click and conversion logits.
        let mut entry = vec![0f32; n];
        let mut click = vec![0f32; n];
        let mut conv = vec![0f32; n];
        let d = self.dim;
        let uc = Self::row(&self.user_click, key.user, d);
        let uv = Self::row(&self.user_conv, key.user, d);
        let click_bias = self.surface_bias[key.surface.index()];
        let conv_bias = self.user_intent[key.user as usize];
        for (j, en) in entry.iter_mut().enumerate() {
            let pin = j as u32;
            if excluded == Some(pin) {
                continue;
            }
            let c = e.pin_category[j] as usize;
            let from_category = match &draws {
                CategoryDraws::PerDraw { weights, popular } => {
                    let r = f64::from(weights[c]) * f64::from(e.category_share[j])
                        + f64::from(*popular) * f64::from(e.pop_share[j]);
                    if r > 0.0 { inclusion(r, n_cat) } else { 0.0 }
                }
                CategoryDraws::PerRequest { weights, popular } => {
                    let mut b = f64::from(weights[c]) * f64::from(e.category_inclusion[j]);
                    if *popular > 0.0 {
                        b += f64::from(*popular) * inclusion(f64::from(e.pop_share[j]), n_cat);
                    }
                    b
                }
            };
            let a_pop = f64::from(pop_inclusion[j]);
            *en = (a_pop + (1.0 - a_pop) * from_category.min(1.0)) as f32
                * self.advertiser_participation[self.pin_advertiser[j] as usize];
        }
        for (((l, k), vc), vv) in click
            .iter_mut()
            .zip(conv.iter_mut())
            .zip(self.pin_click.chunks_exact(d))
            .zip(self.pin_conv.chunks_exact(d))
        {
            *l = lane_dot(uc, vc);
            *k = lane_dot(uv, vv);
        }
        // Pass 2 (vectorised): outcomes and scaled log auction values, one exponential per logit
        // serving both its sigmoid and its log.
        let inv_temp = 1.0 / temp;
        let mut scaled = vec![0f32; n];
        for j in 0..n {
            let l = click_bias + self.click_scale * click[j] + self.pin_quality[j];
            let k = conv_bias + self.conv_scale * conv[j] + self.pin_conv_bias[j];
            let (e_click, e_conv) = (fast_exp(-l), fast_exp(-k));
            let v = self.pin_value_base[j]
                - fast_ln(1.0 + e_click)
                - self.pin_value_converts[j] * fast_ln(1.0 + e_conv);
            scaled[j] = v * inv_temp;
            out[j] = entry[j] * outcome(1.0 / (1.0 + e_click), 1.0 / (1.0 + e_conv));
        }
        // Pass 3: the histogram of the scaled values weighted by the entry probability, over
        // their range widened a little for rounding.
        let (mut s_lo, mut s_hi) = (f32::INFINITY, f32::NEG_INFINITY);
        for (&s, &a) in scaled.iter().zip(&entry) {
            if a > 0.0 {
                s_lo = s_lo.min(s);
                s_hi = s_hi.max(s);
            }
        }
        if s_lo > s_hi {
            // No pin can enter the auction.
            return;
        }
        let (s_lo, s_hi) = (f64::from(s_lo) - 1e-3, f64::from(s_hi) + 1e-3);
        let width = (s_hi - s_lo) / THRESHOLD_BINS as f64;
        let per_bin = 1.0 / width;
        let mut hist = vec![0f64; THRESHOLD_BINS];
        for (&s, &a) in scaled.iter().zip(&entry) {
            if a > 0.0 {
                let bin = ((f64::from(s) - s_lo) * per_bin).clamp(0.0, (THRESHOLD_BINS - 1) as f64);
                hist[bin as usize] += f64::from(a);
            }
        }
        let Some(tau) = selection_threshold(
            &hist,
            s_lo,
            width,
            f64::from(cfg.ads_per_request[key.surface.index()]),
        ) else {
            // No more candidates expected than slots: every candidate is shown.
            return;
        };
        // Pass 4 (vectorised): pi = 1 - exp(-x), x = exp(s - tau), by its series where x is tiny.
        let tau = tau as f32;
        for (o, &s) in out.iter_mut().zip(&scaled) {
            let x = fast_exp(s - tau);
            let pi = if x < 1e-3 {
                x * (1.0 - 0.5 * x)
            } else {
                1.0 - fast_exp(-x)
            };
            *o *= pi;
        }
    }

    /// Expected conversions that one request of this query yields from each pin under the
    /// logging policy: `P(pin shown | user, surface, context) x P(conversion | shown)`, with
    /// `out.len() == num_pins`. Context: the context pin's category (related), the query's
    /// category (search), the user's interest mixture (home feed), as the serving policy uses them.
    ///
    /// Ranking by it is the best any retriever that sees the query's context can do in expectation;
    /// [`GroundTruth::conversion_scores`] ignores the policy, so pins the incumbent never shows on
    /// this request rank high there.
    ///
    /// # Exposure model
    ///
    /// With `v_j` the log of pin `j`'s auction value ([`GroundTruth::auction_value`]: `bid x
    /// p_click` or `target_cpa x p_click x p_conv|click` by its campaign's objective), `T` the
    /// serving temperature, `k` the ads per request of the surface, `r_j` the share of auctions
    /// its advertiser takes part in, `p_j` a popularity draw's probability of pin `j` and `q_j` a
    /// category draw's probability of it within its category `c_j`:
    ///
    /// `P(shown_j) = a_j * pi_j`, where
    ///
    /// * `a_j = r_j (1 - (1 - p_j)^n_pop * (1 - b_j))` is the exact probability that `j` enters
    ///   the auction: its advertiser takes part, and it is a candidate:
    ///   `n_pop` popularity draws (the home feed's `popularity_candidates`, a quarter elsewhere) and
    ///   `n_cat = interest_candidates` category draws, with `b_j = 1 - (1 - w_u(c_j) q_j)^n_cat`
    ///   on the home feed (each draw picks an interest category `c` with weight `w_u(c)`) and
    ///   `b_j = [c_j = c] (1 - (1 - q_j)^n_cat)` on related pins (`c` the context pin's category;
    ///   the context pin itself gets `a = 0`) and search (`c` the query's category). Unknown context
    ///   (none, or an id the marketplace never made) mixes over the categories serving would draw
    ///   it from: `b_j = m(c_j) (1 - (1 - q_j)^n_cat)` with `m = 0.8 w_u + 0.2 * category prior`.
    ///   A draw from a category without pins is a popularity draw, as in serving (for an unknown
    ///   related context this approximates the popular context pin's category by popularity draws).
    /// * `pi_j = 1 - exp(-exp(v_j / T - tau))` approximates `P(selected | candidate)`. Serving keeps
    ///   the `k` candidates with the largest `v / T + Gumbel`; `j` is kept iff its perturbed score
    ///   beats the `k`-th best of the others, and replacing that random threshold by a constant
    ///   `tau` gives `P(G_j > tau - v_j / T)`, the expression above. `tau` (one per query: it sets
    ///   how the auction value trades against candidate probability, so it changes the ranking) is
    ///   set so that the expected number shown is `k`: `sum_i a_i pi_i(tau) = k`, solved by
    ///   Newton steps safeguarded by bisection on a fine histogram of `v / T` weighted by `a`. If fewer than `k` candidates
    ///   are expected, `pi = 1`. This mean-field threshold ignores that the candidate set, hence
    ///   the threshold, varies between requests (and correlates with `j`'s own presence).
    ///
    /// `P(conversion | shown)` is [`GroundTruth::p_conversion`]: true conversions, reported or not.
    ///
    /// # Panics
    /// If `out.len() != self.num_pins()` or `key.user` is out of range.
    #[track_caller]
    pub fn expected_conversion_scores(&self, key: &QueryKey, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.num_pins(),
            "expected_conversion_scores: out must have one slot per pin"
        );
        self.expected_scores(key, out, |pc, g| {
            pc * self.genuine_click_share * g + (1.0 - pc) * self.view_through_rate * g
        });
    }

    /// Expected clicks that one request of this query yields from each pin under the logging
    /// policy: `P(pin shown | user, surface, context) x P(click | shown)`, with
    /// `out.len() == num_pins`; the exposure model is
    /// [`GroundTruth::expected_conversion_scores`]'s.
    ///
    /// # Panics
    /// If `out.len() != self.num_pins()` or `key.user` is out of range.
    #[track_caller]
    pub fn expected_click_scores(&self, key: &QueryKey, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.num_pins(),
            "expected_click_scores: out must have one slot per pin"
        );
        self.expected_scores(key, out, |pc, _| pc);
    }

    /// `P(pin shown | key)` for every pin: [`GroundTruth::expected_conversion_scores`]'s exposure
    /// model alone, for the tests that hold it against the serving code.
    #[cfg(test)]
    pub(crate) fn exposure_probabilities(&self, key: &QueryKey, out: &mut [f32]) {
        self.expected_scores(key, out, |_, _| 1.0);
    }
}

/// The `tau` with `sum_b hist[b] (1 - exp(-exp(t_b - tau))) = k`, `t_b` the centre of bin `b`
/// (bins of `width` from `lo`); `None` when the candidates expected (`sum hist`) are at most `k`,
/// so that every candidate is shown.
fn selection_threshold(hist: &[f64], lo: f64, width: f64, k: f64) -> Option<f64> {
    let bins: Vec<(f64, f64)> = hist
        .iter()
        .enumerate()
        .filter(|(_, a)| **a > 0.0)
        .map(|(b, &a)| (lo + (b as f64 + 0.5) * width, a))
        .collect();
    if bins.iter().map(|b| b.1).sum::<f64>() <= k {
        return None;
    }
    // The expected number shown at `tau`, less k, and its derivative in tau.
    let excess = |tau: f64| -> (f64, f64) {
        bins.iter().fold((-k, 0.0), |(f, df), &(t, a)| {
            let x = (t - tau).exp();
            let stay = (-x).exp();
            (f + a * (1.0 - stay), df - a * x * stay)
        })
    };
    // 50 nats beyond the values' range, every candidate (resp. none) is shown: a bracket. Newton
    // steps (the count falls smoothly in tau) where they stay inside it, bisection otherwise.
    let (mut below, mut above) = (lo - 50.0, lo + hist.len() as f64 * width + 50.0);
    let mut tau = 0.5 * (below + above);
    for _ in 0..THRESHOLD_STEPS {
        let (f, df) = excess(tau);
        if f.abs() <= THRESHOLD_TOLERANCE * k {
            break;
        }
        if f > 0.0 {
            below = tau;
        } else {
            above = tau;
        }
        let newton = tau - f / df;
        tau = if df < 0.0 && newton > below && newton < above {
            newton
        } else {
            0.5 * (below + above)
        };
    }
    Some(tau)
}
