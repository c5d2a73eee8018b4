//! The static side of the marketplace: categories, advertisers, brands, pins, users,
//! queries, their latent factors and the samplers the serving simulation draws from.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::weighted::WeightedAliasIndex;
use rand_distr::{Beta, Distribution, LogNormal, StandardNormal};

use crate::error::{Result, config_error};
use crate::schema::{PinRecord, Surface, UserRecord};
use crate::synth::SynthConfig;
use crate::truth::{Exposure, GenerationRecord, GroundTruth};

pub(crate) const USER_ID_BASE: i64 = 1_000_000;
pub(crate) const PIN_ID_BASE: i64 = 10_000_000;
pub(crate) const ADVERTISER_ID_BASE: i64 = 100_000;
pub(crate) const CATEGORY_ID_BASE: i64 = 1_000;
pub(crate) const BRAND_ID_BASE: i64 = 500_000;
pub(crate) const QUERY_ID_BASE: i64 = 90_000_000;

/// Pins of one category and a popularity sampler over them.
pub(crate) struct CategoryPins {
    pub(crate) pins: Vec<u32>,
    pub(crate) sampler: Option<WeightedAliasIndex<f64>>,
}

pub(crate) struct World {
    pub(crate) truth: GroundTruth,
    pub(crate) pins: Vec<PinRecord>,
    pub(crate) users: Vec<UserRecord>,
    pub(crate) pin_dense_names: Vec<String>,
    pub(crate) user_dense_names: Vec<String>,
    pub(crate) pin_category: Vec<u32>,
    pub(crate) advertiser_pins: Vec<Vec<u32>>,
    pub(crate) popularity: WeightedAliasIndex<f64>,
    pub(crate) category_sampler: WeightedAliasIndex<f64>,
    pub(crate) category_pins: Vec<CategoryPins>,
    /// Interest categories of each user with cumulative mixture weights (last = 1).
    pub(crate) user_interests: Vec<Vec<(u32, f64)>>,
    pub(crate) user_request_rate: Vec<f64>,
    pub(crate) category_queries: Vec<Vec<u32>>,
    /// Per pin, its click factor then its click quality: what the incumbent scores every
    /// candidate with, packed so that a candidate costs one random memory access, not two.
    pub(crate) pin_click_packed: Vec<f32>,
}

fn alias(weights: Vec<f64>, key: &'static str) -> Result<WeightedAliasIndex<f64>> {
    WeightedAliasIndex::new(weights).map_err(|e| {
        config_error(
            key,
            format!("cannot build a sampler from these weights: {e}"),
        )
    })
}

/// A vector of `d` coordinates N(0, sd^2 / d), so that its norm is about `sd`.
fn gaussian(rng: &mut ChaCha8Rng, d: usize, sd: f64) -> Vec<f32> {
    let s = sd / (d as f64).sqrt();
    (0..d)
        .map(|_| (s * rng.sample::<f64, _>(StandardNormal)) as f32)
        .collect()
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

fn unit(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    let mut v = gaussian(rng, d, 1.0);
    normalise(&mut v);
    v
}

/// `normalise(a + b + N(0, sd^2/d))`
fn around(rng: &mut ChaCha8Rng, a: &[f32], b: &[f32], sd: f64) -> Vec<f32> {
    let mut v = gaussian(rng, a.len(), sd);
    for ((x, &p), &q) in v.iter_mut().zip(a).zip(b) {
        *x += p + q;
    }
    normalise(&mut v);
    v
}

/// `normalise(rho * click + sqrt(1 - rho^2) * independent)`
fn mix(click: &[f32], independent: &[f32], rho: f32) -> Vec<f32> {
    let s = (1.0 - rho * rho).max(0.0).sqrt();
    let mut v: Vec<f32> = click
        .iter()
        .zip(independent)
        .map(|(c, i)| rho * c + s * i)
        .collect();
    normalise(&mut v);
    v
}

/// `k` distinct categories drawn from the category popularity.
fn distinct_categories(
    rng: &mut ChaCha8Rng,
    sampler: &WeightedAliasIndex<f64>,
    k: usize,
    num_categories: usize,
) -> Vec<u32> {
    let k = k.min(num_categories);
    let mut out: Vec<u32> = Vec::with_capacity(k);
    while out.len() < k {
        let c = sampler.sample(rng) as u32;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

fn project(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Vec<f32> {
    // Entries N(0, 1/2): a row times the concatenation of two unit vectors has variance ~1.
    (0..rows * cols)
        .map(|_| (std::f64::consts::FRAC_1_SQRT_2 * rng.sample::<f64, _>(StandardNormal)) as f32)
        .collect()
}

fn noisy_projection(rng: &mut ChaCha8Rng, p: &[f32], x: &[f32], noise: f64) -> Vec<f32> {
    p.chunks_exact(x.len())
        .map(|row| {
            let s: f32 = row.iter().zip(x).map(|(a, b)| a * b).sum();
            s + (noise * rng.sample::<f64, _>(StandardNormal)) as f32
        })
        .collect()
}

impl World {
    pub(crate) fn build(cfg: &SynthConfig, rng: &mut ChaCha8Rng, seed: u64) -> Result<World> {
        let d = cfg.latent_dim;
        let rho = cfg.rho as f32;
        let nc = cfg.num_categories;
        let na = cfg.num_advertisers;
        let np = cfg.num_pins;
        let nu = cfg.num_users;

        // Categories: sizes vary, so do their centroids (click and independent conversion side).
        let cat_weight: Vec<f64> = {
            let ln = LogNormal::new(0.0, 0.7)
                .map_err(|e| config_error("num_categories", e.to_string()))?;
            (0..nc).map(|_| ln.sample(rng)).collect()
        };
        let category_sampler = alias(cat_weight.clone(), "num_categories")?;
        let cat_click: Vec<Vec<f32>> = (0..nc).map(|_| unit(rng, d)).collect();
        let cat_conv: Vec<Vec<f32>> = (0..nc).map(|_| unit(rng, d)).collect();
        let cat_log_price: Vec<f64> = (0..nc)
            .map(|_| 3.5 + 0.8 * rng.sample::<f64, _>(StandardNormal))
            .collect();

        // Advertisers: 1-3 main categories, offsets, conversion quality, brands, reporting rate.
        let adv_cats: Vec<Vec<u32>> = (0..na)
            .map(|_| {
                let k = rng.random_range(1..=3usize);
                distinct_categories(rng, &category_sampler, k, nc)
            })
            .collect();
        let adv_click_offset: Vec<Vec<f32>> = (0..na)
            .map(|_| gaussian(rng, d, cfg.advertiser_offset_sd))
            .collect();
        let adv_conv_offset: Vec<Vec<f32>> = (0..na)
            .map(|_| gaussian(rng, d, cfg.advertiser_offset_sd))
            .collect();
        let adv_quality: Vec<f64> = (0..na)
            .map(|_| cfg.advertiser_quality_sd * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let adv_brands: Vec<Vec<i64>> = (0..na)
            .map(|_| {
                let k = rng.random_range(1..=3usize);
                (0..k)
                    .map(|_| BRAND_ID_BASE + rng.random_range(0..cfg.num_brands) as i64)
                    .collect()
            })
            .collect();
        let reporting = {
            let a = cfg.reporting_rate_mean * cfg.reporting_rate_concentration;
            let b = (1.0 - cfg.reporting_rate_mean) * cfg.reporting_rate_concentration;
            Beta::new(a, b)
                .map_err(|e| config_error("reporting_rate_concentration", e.to_string()))?
        };
        let advertiser_reporting_rate: Vec<f32> =
            (0..na).map(|_| reporting.sample(rng) as f32).collect();

        // Pins per advertiser: one each, the rest Zipf-ish, so a few advertisers own most of the catalog.
        let zipf = alias(
            (0..na).map(|r| 1.0 / (r as f64 + 1.0)).collect(),
            "num_advertisers",
        )?;
        let mut pin_advertiser: Vec<u32> = (0..na as u32).collect();
        pin_advertiser.extend((na..np).map(|_| zipf.sample(rng) as u32));
        let mut assigned: Vec<(u32, u32)> = pin_advertiser
            .iter()
            .map(|&a| {
                let cats = &adv_cats[a as usize];
                let c = if cats.len() == 1 || rng.random_bool(0.6) {
                    cats[0]
                } else {
                    cats[rng.random_range(0..cats.len())]
                };
                (c, a)
            })
            .collect();
        // Pins of a category sit together so that serving, which draws candidates from a few
        // categories per user, reads their factors from cache rather than all over memory.
        assigned.sort_unstable();
        let pin_advertiser: Vec<u32> = assigned.iter().map(|&(_, a)| a).collect();

        let pop = LogNormal::new(0.0, cfg.popularity_sigma)
            .map_err(|e| config_error("popularity_sigma", e.to_string()))?;
        let mut pin_click = Vec::with_capacity(np * d);
        let mut pin_conv = Vec::with_capacity(np * d);
        let mut pin_quality = Vec::with_capacity(np);
        let mut pin_conv_bias = Vec::with_capacity(np);
        let mut pin_inspiration = Vec::with_capacity(np);
        let mut pin_category = Vec::with_capacity(np);
        let mut popularity = Vec::with_capacity(np);
        let mut pins = Vec::with_capacity(np);
        let mut advertiser_pins: Vec<Vec<u32>> = vec![Vec::new(); na];
        let pin_proj = project(rng, cfg.pin_dense_dim, 2 * d);
        for (i, &(c, a)) in assigned.iter().enumerate() {
            let (c, a) = (c as usize, a as usize);
            advertiser_pins[a].push(i as u32);
            let vc = around(rng, &cat_click[c], &adv_click_offset[a], cfg.pin_noise_sd);
            let vi = around(rng, &cat_conv[c], &adv_conv_offset[a], cfg.pin_noise_sd);
            let vv = mix(&vc, &vi, rho);
            let log_price = cat_log_price[c] + 0.5 * rng.sample::<f64, _>(StandardNormal);
            let price = (!rng.random_bool(cfg.price_missing_share))
                .then(|| ((log_price.exp() * 100.0).round() / 100.0).max(0.01) as f32);
            let price_effect = if price.is_some() {
                cfg.price_conversion_slope * (log_price - cat_log_price[c])
            } else {
                0.0
            };
            // Inspiration pins draw clicks and saves above their category's rate and rarely sell.
            let inspiration = rng.random_bool(cfg.inspiration_share);
            let (click_lift, conversion_drop) = if inspiration {
                (cfg.inspiration_click_lift, cfg.inspiration_conversion_drop)
            } else {
                (0.0, 0.0)
            };
            pin_inspiration.push(inspiration);
            pin_conv_bias.push(
                (cfg.conversion_bias + adv_quality[a] - price_effect - conversion_drop) as f32,
            );
            pin_quality.push(
                (cfg.pin_quality_sd * rng.sample::<f64, _>(StandardNormal) + click_lift) as f32,
            );
            popularity.push(pop.sample(rng));
            let brand_id = (!rng.random_bool(cfg.brand_missing_share))
                .then(|| adv_brands[a][rng.random_range(0..adv_brands[a].len())]);
            let both: Vec<f32> = vc.iter().chain(&vv).copied().collect();
            let dense = noisy_projection(rng, &pin_proj, &both, cfg.dense_noise_sd);
            pin_click.extend_from_slice(&vc);
            pin_conv.extend_from_slice(&vv);
            pin_category.push(c as u32);
            pins.push(PinRecord {
                pin_id: PIN_ID_BASE + i as i64,
                advertiser_id: ADVERTISER_ID_BASE + a as i64,
                category_id: CATEGORY_ID_BASE + c as i64,
                brand_id,
                price,
                dense,
            });
        }
        let mut per_cat: Vec<Vec<u32>> = vec![Vec::new(); nc];
        for (i, &c) in pin_category.iter().enumerate() {
            per_cat[c as usize].push(i as u32);
        }
        let category_pins = per_cat
            .into_iter()
            .map(|pins| {
                let sampler = if pins.is_empty() {
                    None
                } else {
                    Some(alias(
                        pins.iter().map(|&p| popularity[p as usize]).collect(),
                        "num_pins",
                    )?)
                };
                Ok(CategoryPins { pins, sampler })
            })
            .collect::<Result<Vec<_>>>()?;
        let popularity_weights = popularity;
        let popularity = alias(popularity_weights.clone(), "popularity_sigma")?;

        // Users: a mixture of 1-3 interest categories plus noise; lognormal activity.
        let activity = LogNormal::new(0.0, cfg.activity_sigma)
            .map_err(|e| config_error("activity_sigma", e.to_string()))?;
        let user_proj = project(rng, cfg.user_dense_dim - 1, 2 * d);
        let mut user_click = Vec::with_capacity(nu * d);
        let mut user_conv = Vec::with_capacity(nu * d);
        let mut user_interests = Vec::with_capacity(nu);
        let mut user_activity = Vec::with_capacity(nu);
        let mut user_intent = Vec::with_capacity(nu);
        let mut users = Vec::with_capacity(nu);
        for u in 0..nu {
            let k = rng.random_range(1..=3usize);
            let cats = distinct_categories(rng, &category_sampler, k, nc);
            let w: Vec<f64> = cats.iter().map(|_| rng.random_range(0.2..1.0)).collect();
            let total: f64 = w.iter().sum();
            let mut mc = vec![0f32; d];
            let mut mi = vec![0f32; d];
            let mut cum = 0.0;
            let mut interests = Vec::with_capacity(k);
            for (&c, &wc) in cats.iter().zip(&w) {
                let share = wc / total;
                cum += share;
                interests.push((c, cum));
                for j in 0..d {
                    mc[j] += share as f32 * cat_click[c as usize][j];
                    mi[j] += share as f32 * cat_conv[c as usize][j];
                }
            }
            if let Some(last) = interests.last_mut() {
                last.1 = 1.0;
            }
            let zero = vec![0f32; d];
            let uc = around(rng, &mc, &zero, cfg.user_noise_sd);
            let ui = around(rng, &mi, &zero, cfg.user_noise_sd);
            let uv = mix(&uc, &ui, rho);
            let act: f64 = activity.sample(rng);
            user_intent
                .push((cfg.purchase_intent_sd * rng.sample::<f64, _>(StandardNormal)) as f32);
            let both: Vec<f32> = uc.iter().chain(&uv).copied().collect();
            let mut dense = vec![
                (act.ln() + 0.3 * cfg.dense_noise_sd * rng.sample::<f64, _>(StandardNormal)) as f32,
            ];
            dense.extend(noisy_projection(rng, &user_proj, &both, cfg.dense_noise_sd));
            user_click.extend_from_slice(&uc);
            user_conv.extend_from_slice(&uv);
            user_interests.push(interests);
            user_activity.push(act);
            users.push(UserRecord {
                user_id: USER_ID_BASE + u as i64,
                categorical: Vec::new(),
                dense,
            });
        }
        let traffic_total: f64 = cfg.surface_traffic.iter().sum();
        let ads_per_request: f64 = cfg
            .surface_traffic
            .iter()
            .zip(cfg.ads_per_request)
            .map(|(t, a)| t / traffic_total * f64::from(a))
            .sum();
        let requests = cfg.impressions as f64 / ads_per_request;
        let activity_total: f64 = user_activity.iter().sum();
        let user_request_rate: Vec<f64> = user_activity
            .iter()
            .map(|a| requests * a / activity_total)
            .collect();

        let mut category_queries: Vec<Vec<u32>> = vec![Vec::new(); nc];
        for q in 0..cfg.num_queries {
            category_queries[q % nc].push(q as u32);
        }

        let pin_click_packed = pin_click
            .chunks_exact(d)
            .zip(&pin_quality)
            .flat_map(|(v, &q)| v.iter().copied().chain([q]))
            .collect();
        let exposure = Exposure::new(
            cfg,
            pin_category.clone(),
            &popularity_weights,
            &cat_weight,
            &user_interests,
            &category_queries,
        );
        // (p_click on the home feed, p_conv | genuine click) of the pin for a random user.
        let outcome = |rng: &mut ChaCha8Rng, p: u32| -> (f64, f64) {
            let (p, u) = (p as usize, rng.random_range(0..nu));
            let dot = |a: &[f32], b: &[f32]| -> f64 {
                f64::from(a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>())
            };
            let (ru, rp) = (u * d..(u + 1) * d, p * d..(p + 1) * d);
            let click = cfg.surface_click_bias[0]
                + cfg.click_affinity_scale * dot(&user_click[ru.clone()], &pin_click[rp.clone()])
                + f64::from(pin_quality[p]);
            let conv = f64::from(pin_conv_bias[p] + user_intent[u])
                + cfg.conversion_affinity_scale * dot(&user_conv[ru], &pin_conv[rp]);
            let sigmoid = |x: f64| 1.0 / (1.0 + (-x).exp());
            (sigmoid(click), sigmoid(conv))
        };
        let pin_value = super::bids::conversion_values(&pins);
        let campaigns =
            super::bids::draw_campaigns(cfg, seed, &pins, &pin_advertiser, &pin_value, outcome);
        let (pin_value_base, pin_value_converts) = GroundTruth::value_bases(
            &pin_advertiser,
            &campaigns.pin_bid,
            &campaigns.target_cpa,
            (1.0 - cfg.accidental_click_share) as f32,
        );
        let truth = GroundTruth {
            dim: d,
            user_click,
            user_conv,
            pin_click,
            pin_conv,
            pin_quality,
            pin_conv_bias,
            pin_inspiration,
            user_intent,
            pin_advertiser,
            pin_value_base,
            pin_value_converts,
            pin_bid: campaigns.pin_bid,
            pin_value,
            advertiser_target_cpa: campaigns.target_cpa,
            advertiser_participation: campaigns.participation,
            user_request_rate: user_request_rate.clone(),
            advertiser_reporting_rate,
            surface_bias: cfg.surface_click_bias.map(|b| b as f32),
            click_scale: cfg.click_affinity_scale as f32,
            conv_scale: cfg.conversion_affinity_scale as f32,
            genuine_click_share: (1.0 - cfg.accidental_click_share) as f32,
            view_through_rate: cfg.view_through_rate as f32,
            exposure,
            record: GenerationRecord {
                config: cfg.clone(),
                seed,
                ..GenerationRecord::default()
            },
        };
        let mut user_dense_names = vec!["f_log_activity".to_owned()];
        user_dense_names.extend((1..cfg.user_dense_dim).map(|i| format!("f_{i}")));
        Ok(World {
            truth,
            pins,
            users,
            pin_dense_names: (0..cfg.pin_dense_dim).map(|i| format!("f_{i}")).collect(),
            user_dense_names,
            pin_category,
            advertiser_pins,
            popularity,
            category_sampler,
            category_pins,
            user_interests,
            user_request_rate,
            category_queries,
            pin_click_packed,
        })
    }

    /// A category drawn from the user's interests.
    pub(crate) fn interest_category(&self, rng: &mut ChaCha8Rng, user: u32) -> u32 {
        let interests = &self.user_interests[user as usize];
        let x: f64 = rng.random();
        interests
            .iter()
            .find(|(_, cum)| x < *cum)
            .or(interests.last())
            .map_or(0, |(c, _)| *c)
    }

    /// The click logit: [`GroundTruth::click_logit`] from the packed copy.
    pub(crate) fn click_logit(&self, user: u32, pin: u32, surface: Surface) -> f32 {
        let d = self.truth.dim;
        let uc = &self.truth.user_click[user as usize * d..(user as usize + 1) * d];
        let row = &self.pin_click_packed[pin as usize * (d + 1)..(pin as usize + 1) * (d + 1)];
        let dot: f32 = uc.iter().zip(row).map(|(a, b)| a * b).sum();
        self.truth.surface_bias[surface.index()] + self.truth.click_scale * dot + row[d]
    }

    /// A pin of the category, by popularity (any pin if the category has none).
    pub(crate) fn pin_in_category(&self, rng: &mut ChaCha8Rng, category: u32) -> u32 {
        let cp = &self.category_pins[category as usize];
        match &cp.sampler {
            Some(s) => cp.pins[s.sample(rng)],
            None => self.popularity.sample(rng) as u32,
        }
    }
}
