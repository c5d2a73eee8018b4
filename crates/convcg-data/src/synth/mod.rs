//! The seeded synthetic marketplace (docs/design.md, The synthetic marketplace).
//!
//! # Generative model
//!
//! * **Catalog.** Categories have sizes (lognormal weights), a click centroid, an independent
//!   conversion centroid and a typical log price. Advertisers own pins (one each, the rest
//!   Zipf-distributed) in 1-3 main categories, with their own click and conversion offsets, a
//!   conversion quality, 1-3 brands and a Beta-distributed conversion reporting rate. A pin's
//!   click factor is `normalise(category centroid + advertiser offset + noise)`; its independent
//!   conversion part is built the same way from the conversion centroids and offsets; its
//!   conversion factor is `normalise(rho * click + sqrt(1 - rho^2) * independent)`. Each pin has a
//!   click quality, a lognormal popularity weight and a price; its `f_*` columns are noisy random
//!   projections of its two factors. An advertiser's conversion propensity
//!   (`advertiser_quality_sd`) spreads its conversions per click over two orders of magnitude; a
//!   pin's price above its category's typical one lowers its conversion logit
//!   (`price_conversion_slope`); a share of pins inspire rather than sell (`inspiration_*`:
//!   clicked more, bought far less).
//! * **Users** are a mixture of 1-3 interest categories plus noise (their click factor), with a
//!   conversion factor mixed exactly like the pins', a purchase intent added to every conversion
//!   logit of theirs (`purchase_intent_sd`: a minority makes most conversions), and lognormal
//!   activity levels; their `f_*` columns are a noisy log activity and noisy projections of their
//!   factors.
//! * **Serving.** Each user makes a Poisson number of requests (rate proportional to activity)
//!   at uniform times over `days`. A request picks a surface by traffic share; candidates come
//!   from the popularity sampler plus, on the home feed, the user's interest categories; on related
//!   pins, the category of a context pin (drawn from the user's interests 80% of the time); on
//!   search, the category of a query (each query tied to one category): the incumbent's candidate
//!   generator is engagement-optimised. Each candidate's advertiser takes part in the auction with
//!   its budget's pacing share; the auction shows `ads_per_request` of them, drawn without
//!   replacement from a softmax (`serving_temperature`, the competition of other demand) over the
//!   log of each ad's expected value per impression under its campaign's objective:
//!   `bid x p_click` (click campaigns), `target_cpa x p_click x p_conv|click` (conversion
//!   campaigns, `conversion_campaign_share` of the advertisers).
//! * **Outcomes.** Clicks with probability [`GroundTruth::p_click`]; a share of clicks is
//!   accidental (1-3 s, never converting); genuine click durations are lognormal and longer with
//!   conversion affinity; saves with `save_rate` times the click probability. A genuine click
//!   converts with `sigmoid(conversion bias + advertiser quality - price effect + g <u_conv, v_conv>)`,
//!   an unclicked impression (view-through) with `view_through_rate` times that; delays are
//!   lognormal (median a day, 90th percentile past 5 days). Conversions past the label horizon
//!   (`label_horizon_days` after the last impression) are not logged.
//! * **Noise.** A true conversion is reported with its advertiser's reporting rate; a reported one
//!   is credited to another pin of the same advertiser with a small probability, and fraudulent
//!   conversions (a pin the user never saw, random time) are added so that they make up
//!   `fake_share` of the reported ones.
//!
//! * **Campaigns** (`bids`): a lognormal cost-per-click bid per pin around its advertiser's level,
//!   higher for dearer pins; each advertiser's objective, target cost per action and budget
//!   pacing; and the expected value of a conversion (its price times the share of conversions that
//!   report one). Drawn from a stream of their own after the world, so that their settings move
//!   no draw of the world; they decide which ads the auctions show.
//! * **Traffic** (`traffic`): requests drawn as serving draws them (user by activity, surface,
//!   context), for the simulated A/B on traffic.
//!
//! Each user draws from their own ChaCha8 stream of the seed, so the log does not depend on the
//! number of threads or on how users are split among them.

mod bids;
mod config;
pub(crate) mod realised;
pub(crate) mod serve;
mod traffic;
pub(crate) mod world;

use std::sync::atomic::{AtomicU64, Ordering};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use config::SynthConfig;
pub use realised::RealisedProperties;

use crate::error::Result;
use crate::schema::{Conversion, EventLog, Impressions};
use crate::truth::GroundTruth;
use serve::{Block, Serving};
use world::{PIN_ID_BASE, World};

/// Users simulated per rayon task.
const USERS_PER_TASK: usize = 256;

/// A generated marketplace: the log a platform would see, and the truth behind it.
#[derive(Clone, Debug)]
pub struct Marketplace {
    /// The event log in the canonical schema (reported conversions, noise included).
    pub log: EventLog,
    /// True click and conversion probabilities.
    pub truth: GroundTruth,
    /// Every true conversion up to the label horizon, reported or not, fraud excluded.
    pub true_conversions: Vec<Conversion>,
}

impl Marketplace {
    /// Generates the marketplace. Deterministic for (cfg, seed) whatever the thread count.
    /// `progress(done, total)` is called from time to time (for a progress bar; may be a no-op).
    pub fn generate(
        cfg: &SynthConfig,
        seed: u64,
        progress: &(dyn Fn(u64, u64) + Sync),
    ) -> Result<Marketplace> {
        cfg.validate()?;
        let base = ChaCha8Rng::seed_from_u64(seed);
        let mut world_rng = base.clone();
        world_rng.set_stream(0);
        let mut world = World::build(cfg, &mut world_rng, seed)?;

        let total = cfg.num_users as u64;
        progress(0, total);
        let done = AtomicU64::new(0);
        let blocks: Vec<Block> = {
            let serving = Serving::new(cfg, &world, &base);
            let tasks = cfg.num_users.div_ceil(USERS_PER_TASK);
            (0..tasks)
                .into_par_iter()
                .map(|t| {
                    let range = t * USERS_PER_TASK..((t + 1) * USERS_PER_TASK).min(cfg.num_users);
                    let n = range.len() as u64;
                    let block = serving.run(range);
                    progress(done.fetch_add(n, Ordering::Relaxed) + n, total);
                    block
                })
                .collect()
        };

        let n_imp: usize = blocks.iter().map(|b| b.impressions.len()).sum();
        let n_eng: usize = blocks.iter().map(|b| b.engagements.len()).sum();
        let mut impressions = Impressions::with_capacity(n_imp);
        let mut engagements = Vec::with_capacity(n_eng);
        let mut true_conversions = Vec::new();
        let mut reported = Vec::new();
        let mut user_offsets = Vec::with_capacity(cfg.num_users + 1);
        user_offsets.push(0usize);
        let mut request_base = 0i64;
        let record = &mut world.truth.record;
        for block in blocks {
            // Ids start at 1, in block order, so they do not depend on the thread count.
            let imp_base = impressions.len() as i64 + 1;
            for mut i in block.impressions {
                i.impression_id += imp_base;
                i.request_id += request_base + 1;
                impressions.push(i);
            }
            engagements.extend(block.engagements.into_iter().map(|mut e| {
                e.impression_id += imp_base;
                e
            }));
            request_base += block.requests;
            for n in block.user_impressions {
                let last = *user_offsets.last().unwrap_or(&0);
                user_offsets.push(last + n as usize);
            }
            true_conversions.extend(block.true_conversions);
            reported.extend(block.reported);
            for s in 0..3 {
                record.impressions_per_surface[s] += block.impressions_per_surface[s];
                record.clicks_per_surface[s] += block.clicks_per_surface[s];
            }
            record.accidental_clicks += block.accidental_clicks;
            record.delays_days.extend(block.delays_days);
            record.view_through_conversions += block.view_through;
            record.misattributed += block.misattributed;
        }
        record.reported_genuine = reported.len() as u64;

        let fakes = fraud(cfg, &world, &base, &impressions, &user_offsets, &reported);
        world.truth.record.fake = fakes.len() as u64;
        let mut conversions = reported;
        conversions.extend(fakes);
        conversions.sort_by_key(|c| (c.ts, c.user_id, c.pin_id));
        true_conversions.sort_by_key(|c| (c.ts, c.user_id, c.pin_id));

        Ok(Marketplace {
            log: EventLog {
                pins: world.pins,
                users: world.users,
                impressions,
                engagements,
                conversions,
                pin_dense_names: world.pin_dense_names,
                user_dense_names: world.user_dense_names,
                user_categorical_names: Vec::new(),
            },
            truth: world.truth,
            true_conversions,
        })
    }
}

/// Fraudulent conversions: for a random user, a random pin of the advertiser of a reported
/// conversion that the user was never shown, at a random time.
fn fraud(
    cfg: &SynthConfig,
    world: &World,
    base: &ChaCha8Rng,
    impressions: &Impressions,
    user_offsets: &[usize],
    reported: &[Conversion],
) -> Vec<Conversion> {
    const TRIES: usize = 8;
    let mut rng = base.clone();
    rng.set_stream(u64::MAX);
    let serving = Serving::new(cfg, world, base);
    let p_fake = cfg.fake_share / (1.0 - cfg.fake_share);
    let span = (serving.horizon_end() - cfg.start_ts).max(1);
    let mut out = Vec::new();
    for c in reported {
        if !rng.random_bool(p_fake.min(1.0)) {
            continue;
        }
        let pin = (c.pin_id - PIN_ID_BASE) as usize;
        let adv = &world.advertiser_pins[world.truth.pin_advertiser[pin] as usize];
        for _ in 0..TRIES {
            let u = rng.random_range(0..cfg.num_users);
            let p = adv[rng.random_range(0..adv.len())];
            let pin_id = PIN_ID_BASE + i64::from(p);
            let seen = impressions.pin_id[user_offsets[u]..user_offsets[u + 1]].contains(&pin_id);
            if !seen {
                let ts = cfg.start_ts + rng.random_range(0..span);
                out.push(serving.conversion_event(&mut rng, u as u32, p, ts));
                break;
            }
        }
    }
    out
}
