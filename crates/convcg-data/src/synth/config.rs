use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Result, config_error, non_negative};
use crate::schema::Surface;

/// Every knob of the synthetic marketplace. [`Default`] meets docs/design.md's targets: a world
/// in which conversions are rare, delayed and noisy, so that no result is bought by an easy one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct SynthConfig {
    /// Users.
    pub num_users: usize,
    /// Ad pins in the catalog.
    pub num_pins: usize,
    /// Advertisers owning the pins (at most `num_pins`).
    pub num_advertisers: usize,
    /// Product categories.
    pub num_categories: usize,
    /// Brands.
    pub num_brands: usize,
    /// Distinct search queries, each tied to one category (at least `num_categories`).
    pub num_queries: usize,
    /// Dimension of the latent click and conversion factors.
    pub latent_dim: usize,
    /// Days of impressions.
    pub days: u32,
    /// Unix seconds of the first possible impression.
    pub start_ts: i64,
    /// Expected number of impressions in total.
    pub impressions: u64,
    /// Days after the last impression up to which conversions are logged (the label horizon).
    pub label_horizon_days: f64,
    /// Share of requests per surface (home feed, related, search); normalised.
    pub surface_traffic: [f64; 3],
    /// Ads shown per request per surface.
    pub ads_per_request: [u32; 3],
    /// Logit bias of a click per surface: sets each surface's click-through rate.
    pub surface_click_bias: [f64; 3],
    /// Candidates drawn by popularity for a home-feed request (a quarter of it elsewhere).
    pub popularity_candidates: usize,
    /// Candidates drawn from the user's interest, the context pin's or the query's category.
    pub interest_candidates: usize,
    /// Temperature of the incumbent's softmax over candidates' click logits.
    pub serving_temperature: f64,
    /// Sigma of the pins' lognormal popularity weights: sets the impression skew.
    pub popularity_sigma: f64,
    /// Sigma of the users' lognormal activity levels.
    pub activity_sigma: f64,
    /// Norm of an advertiser's offset from its category centroid.
    pub advertiser_offset_sd: f64,
    /// Norm of a pin's own noise around its advertiser.
    pub pin_noise_sd: f64,
    /// Norm of a user's own noise around the mixture of their interest categories.
    pub user_noise_sd: f64,
    /// Correlation of the click and conversion latent factors (docs/design.md, Targets: 0.5; also
    /// 0.3 and 0.8).
    pub rho: f64,
    /// Scale of the click affinity `<u_click, v_click>` in the click logit.
    pub click_affinity_scale: f64,
    /// Standard deviation of the pins' click quality (added to the click logit).
    pub pin_quality_sd: f64,
    /// Logit bias of a conversion after a genuine click: sets conversions per click.
    pub conversion_bias: f64,
    /// Scale of the conversion affinity `<u_conv, v_conv>` in the conversion logit.
    pub conversion_affinity_scale: f64,
    /// Standard deviation of the advertisers' conversion quality (added to the conversion logit).
    pub advertiser_quality_sd: f64,
    /// Conversion logit lost per unit of log price above the category's typical price.
    pub price_conversion_slope: f64,
    /// Share of clicks that are accidental: 1-3 s, never converting.
    pub accidental_click_share: f64,
    /// Save probability as a multiple of the click probability (saves are rarer than clicks).
    pub save_rate: f64,
    /// View-through conversion probability of an unclicked impression, as a multiple of the
    /// conversion probability after a click.
    pub view_through_rate: f64,
    /// Median duration of a genuine click at zero conversion affinity, seconds.
    pub click_duration_median_s: f64,
    /// Sigma of the lognormal click duration.
    pub click_duration_sigma: f64,
    /// Log-duration gained per unit of conversion affinity.
    pub duration_affinity_slope: f64,
    /// Median delay from click (or view) to conversion, hours.
    pub delay_median_hours: f64,
    /// Sigma of the lognormal conversion delay (1.6 puts the 90th percentile near 8 days).
    pub delay_sigma: f64,
    /// Mean of the advertisers' Beta-distributed reporting rates.
    pub reporting_rate_mean: f64,
    /// Concentration (alpha + beta) of that Beta: lower means more spread between advertisers.
    pub reporting_rate_concentration: f64,
    /// Share of reported conversions that are fraudulent: a pin the user never saw.
    pub fake_share: f64,
    /// Share of reported conversions credited to another pin of the same advertiser.
    pub misattributed_share: f64,
    /// Share of pins without a brand.
    pub brand_missing_share: f64,
    /// Share of pins without a price.
    pub price_missing_share: f64,
    /// Number of pin `f_*` dense columns (noisy projections of the pin's latent factors).
    pub pin_dense_dim: usize,
    /// Number of user `f_*` dense columns (log activity, then noisy projections of the user's factors).
    pub user_dense_dim: usize,
    /// Noise standard deviation of the dense columns.
    pub dense_noise_sd: f64,
    /// Median cost-per-click bid (in the prices' currency) of a pin at the catalog's median
    /// price; bids feed only the simulated serving's auction and never change the log.
    pub bid_median: f64,
    /// Sigma of the advertisers' lognormal bid level: some bid high across their catalog.
    pub bid_advertiser_sigma: f64,
    /// Sigma of each pin's lognormal bid jitter around its advertiser's level.
    pub bid_pin_sigma: f64,
    /// Log-bid gained per unit of log price above the catalog's median (0 without a price):
    /// dearer products bid more per click.
    pub bid_price_elasticity: f64,
    /// Share of advertisers running a conversion campaign (a target cost per action, ranked by
    /// `target_cpa x p_click x p_conv|click`); the rest run click campaigns (a cost-per-click bid,
    /// ranked by `bid x p_click`). Both the incumbent's auction and the simulated serving rank so.
    pub conversion_campaign_share: f64,
    /// Sigma of the lognormal factor between an advertiser's target cost per action and the cost
    /// per conversion its clicks would have bought at its typical conversion rate (its bid over
    /// that rate, the usual starting point of a target CPA).
    pub target_cpa_sigma: f64,
    /// Share of advertisers whose budget binds: they take part in only some auctions (budget
    /// pacing by throttling).
    pub budget_limited_share: f64,
    /// Least share of auctions a budget-limited advertiser takes part in; each one's share is
    /// uniform between this and 1.
    pub budget_pacing_min: f64,
    /// Share of pins that inspire rather than sell (ideas, looks, recipes): clicked and saved above
    /// their category's rate, rarely bought.
    pub inspiration_share: f64,
    /// Click logit an inspiration pin gains.
    pub inspiration_click_lift: f64,
    /// Conversion logit an inspiration pin loses.
    pub inspiration_conversion_drop: f64,
    /// Standard deviation of the users' purchase intent, added to the conversion logit (a
    /// lognormal factor on the odds): a minority of users make most conversions.
    pub purchase_intent_sd: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            num_users: 100_000,
            num_pins: 100_000,
            num_advertisers: 2_000,
            num_categories: 100,
            num_brands: 5_000,
            num_queries: 2_000,
            latent_dim: 16,
            days: 28,
            start_ts: 1_704_067_200,
            impressions: 18_000_000,
            label_horizon_days: 7.0,
            surface_traffic: [0.55, 0.25, 0.20],
            ads_per_request: [4, 3, 3],
            surface_click_bias: [-5.6, -5.2, -4.7],
            popularity_candidates: 8,
            interest_candidates: 12,
            serving_temperature: 1.0,
            popularity_sigma: 1.4,
            activity_sigma: 1.0,
            advertiser_offset_sd: 0.6,
            pin_noise_sd: 0.5,
            user_noise_sd: 0.6,
            rho: 0.5,
            click_affinity_scale: 3.0,
            pin_quality_sd: 0.5,
            conversion_bias: -9.4,
            conversion_affinity_scale: 3.0,
            advertiser_quality_sd: 1.8,
            price_conversion_slope: 2.0,
            accidental_click_share: 0.15,
            save_rate: 0.3,
            view_through_rate: 0.004,
            click_duration_median_s: 12.0,
            click_duration_sigma: 0.8,
            duration_affinity_slope: 0.6,
            delay_median_hours: 24.0,
            delay_sigma: 1.6,
            reporting_rate_mean: 0.8,
            reporting_rate_concentration: 10.0,
            fake_share: 0.04,
            misattributed_share: 0.03,
            brand_missing_share: 0.1,
            price_missing_share: 0.05,
            pin_dense_dim: 8,
            user_dense_dim: 8,
            dense_noise_sd: 1.0,
            bid_median: 0.75,
            bid_advertiser_sigma: 0.5,
            bid_pin_sigma: 0.2,
            bid_price_elasticity: 0.3,
            conversion_campaign_share: 0.6,
            target_cpa_sigma: 0.3,
            budget_limited_share: 0.5,
            budget_pacing_min: 0.2,
            inspiration_share: 0.2,
            inspiration_click_lift: 1.0,
            inspiration_conversion_drop: 4.0,
            purchase_intent_sd: 2.0,
        }
    }
}

fn positive(key: &'static str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(config_error(
            key,
            format!("must be a finite number > 0, got {v}"),
        ))
    }
}

fn finite(key: &'static str, v: f64) -> Result<()> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(config_error(key, format!("must be finite, got {v}")))
    }
}

fn share(key: &'static str, v: f64, top_open: bool) -> Result<()> {
    let ok = v.is_finite() && v >= 0.0 && if top_open { v < 1.0 } else { v <= 1.0 };
    if ok {
        Ok(())
    } else {
        let range = if top_open { "[0, 1)" } else { "[0, 1]" };
        Err(config_error(key, format!("must be in {range}, got {v}")))
    }
}

/// Unix seconds of 2100-01-01: a bound on `start_ts` that keeps every timestamp far from
/// overflowing.
const MAX_START_TS: i64 = 4_102_444_800;

/// The longest span of days accepted (100 years).
const MAX_DAYS: u32 = 36_500;

fn at_most(key: &'static str, v: usize, max: usize) -> Result<()> {
    if v <= max {
        Ok(())
    } else {
        Err(config_error(key, format!("must be at most {max}, got {v}")))
    }
}

fn at_least(key: &'static str, v: usize, min: usize) -> Result<()> {
    if v >= min {
        Ok(())
    } else {
        Err(config_error(
            key,
            format!("must be at least {min}, got {v}"),
        ))
    }
}

impl SynthConfig {
    /// Candidates a request on `surface` draws by popularity: `popularity_candidates` on the home
    /// feed, a quarter of it (rounded up) where a context pin or a query supplies the rest.
    pub(crate) fn popularity_draws(&self, surface: Surface) -> usize {
        match surface {
            Surface::HomeFeed => self.popularity_candidates,
            Surface::Related | Surface::Search => self.popularity_candidates.div_ceil(4),
        }
    }

    /// Checks every key; the error names the bad key and what is allowed.
    pub fn validate(&self) -> Result<()> {
        at_least("num_users", self.num_users, 1)?;
        at_least("num_pins", self.num_pins, 1)?;
        at_least("num_advertisers", self.num_advertisers, 1)?;
        if self.num_advertisers > self.num_pins {
            return Err(config_error(
                "num_advertisers",
                format!(
                    "must be at most num_pins ({}) since every advertiser owns a pin, got {}",
                    self.num_pins, self.num_advertisers
                ),
            ));
        }
        at_least("num_categories", self.num_categories, 1)?;
        at_least("num_brands", self.num_brands, 1)?;
        at_least("num_queries", self.num_queries, self.num_categories)?;
        at_least("latent_dim", self.latent_dim, 2)?;
        at_most("latent_dim", self.latent_dim, 1024)?;
        if self.days == 0 || self.days > MAX_DAYS {
            return Err(config_error(
                "days",
                format!("must be in 1..={MAX_DAYS}, got {}", self.days),
            ));
        }
        if !(0..=MAX_START_TS).contains(&self.start_ts) {
            return Err(config_error(
                "start_ts",
                format!(
                    "must be Unix seconds in 0..={MAX_START_TS} (1970 to 2100), got {}",
                    self.start_ts
                ),
            ));
        }
        if u32::try_from(self.num_users).is_err() || u32::try_from(self.num_pins).is_err() {
            return Err(config_error(
                if u32::try_from(self.num_users).is_err() {
                    "num_users"
                } else {
                    "num_pins"
                },
                "must fit in a u32 index",
            ));
        }
        if self.impressions == 0 {
            return Err(config_error("impressions", "must be at least 1, got 0"));
        }
        non_negative("label_horizon_days", self.label_horizon_days)?;
        if self.label_horizon_days > f64::from(MAX_DAYS) {
            return Err(config_error(
                "label_horizon_days",
                format!(
                    "must be at most {MAX_DAYS}, got {}",
                    self.label_horizon_days
                ),
            ));
        }
        for v in self.surface_traffic {
            non_negative("surface_traffic", v)?;
        }
        if self.surface_traffic.iter().sum::<f64>() <= 0.0 {
            return Err(config_error(
                "surface_traffic",
                "must have a positive share somewhere",
            ));
        }
        if self.ads_per_request.contains(&0) {
            return Err(config_error(
                "ads_per_request",
                "every surface must show at least 1 ad",
            ));
        }
        for v in self.surface_click_bias {
            finite("surface_click_bias", v)?;
        }
        at_least("popularity_candidates", self.popularity_candidates, 1)?;
        at_least("interest_candidates", self.interest_candidates, 1)?;
        positive("serving_temperature", self.serving_temperature)?;
        non_negative("popularity_sigma", self.popularity_sigma)?;
        non_negative("activity_sigma", self.activity_sigma)?;
        non_negative("advertiser_offset_sd", self.advertiser_offset_sd)?;
        non_negative("pin_noise_sd", self.pin_noise_sd)?;
        non_negative("user_noise_sd", self.user_noise_sd)?;
        share("rho", self.rho, false)?;
        non_negative("click_affinity_scale", self.click_affinity_scale)?;
        non_negative("pin_quality_sd", self.pin_quality_sd)?;
        finite("conversion_bias", self.conversion_bias)?;
        non_negative("conversion_affinity_scale", self.conversion_affinity_scale)?;
        non_negative("advertiser_quality_sd", self.advertiser_quality_sd)?;
        finite("price_conversion_slope", self.price_conversion_slope)?;
        share("accidental_click_share", self.accidental_click_share, false)?;
        share("save_rate", self.save_rate, false)?;
        share("view_through_rate", self.view_through_rate, false)?;
        positive("click_duration_median_s", self.click_duration_median_s)?;
        non_negative("click_duration_sigma", self.click_duration_sigma)?;
        finite("duration_affinity_slope", self.duration_affinity_slope)?;
        positive("delay_median_hours", self.delay_median_hours)?;
        non_negative("delay_sigma", self.delay_sigma)?;
        if !(self.reporting_rate_mean > 0.0 && self.reporting_rate_mean < 1.0) {
            return Err(config_error(
                "reporting_rate_mean",
                format!("must be in (0, 1), got {}", self.reporting_rate_mean),
            ));
        }
        positive(
            "reporting_rate_concentration",
            self.reporting_rate_concentration,
        )?;
        share("fake_share", self.fake_share, true)?;
        share("misattributed_share", self.misattributed_share, true)?;
        if self.fake_share + self.misattributed_share >= 1.0 {
            return Err(config_error(
                "misattributed_share",
                format!(
                    "fake_share + misattributed_share must be < 1, got {}",
                    self.fake_share + self.misattributed_share
                ),
            ));
        }
        share("brand_missing_share", self.brand_missing_share, false)?;
        share("price_missing_share", self.price_missing_share, false)?;
        at_most("pin_dense_dim", self.pin_dense_dim, 1024)?;
        at_least("user_dense_dim", self.user_dense_dim, 1)?;
        at_most("user_dense_dim", self.user_dense_dim, 1024)?;
        non_negative("dense_noise_sd", self.dense_noise_sd)?;
        positive("bid_median", self.bid_median)?;
        non_negative("bid_advertiser_sigma", self.bid_advertiser_sigma)?;
        non_negative("bid_pin_sigma", self.bid_pin_sigma)?;
        finite("bid_price_elasticity", self.bid_price_elasticity)?;
        share(
            "conversion_campaign_share",
            self.conversion_campaign_share,
            false,
        )?;
        non_negative("target_cpa_sigma", self.target_cpa_sigma)?;
        share("budget_limited_share", self.budget_limited_share, false)?;
        if !(self.budget_pacing_min > 0.0 && self.budget_pacing_min <= 1.0) {
            return Err(config_error(
                "budget_pacing_min",
                format!("must be in (0, 1], got {}", self.budget_pacing_min),
            ));
        }
        share("inspiration_share", self.inspiration_share, false)?;
        finite("inspiration_click_lift", self.inspiration_click_lift)?;
        finite(
            "inspiration_conversion_drop",
            self.inspiration_conversion_drop,
        )?;
        non_negative("purchase_intent_sd", self.purchase_intent_sd)?;
        Ok(())
    }
}
