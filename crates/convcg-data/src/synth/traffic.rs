//! Requests drawn from the marketplace's traffic model, for the simulated A/B on traffic
//! (docs/design.md, Simulated A/B on traffic): who asks for ads, on which surface, in which
//! context.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::Distribution;
use rand_distr::weighted::WeightedAliasIndex;

use crate::dataset::QueryKey;
use crate::error::{Result, config_error};
use crate::schema::Surface;
use crate::synth::Marketplace;
use crate::synth::serve::ON_INTEREST;
use crate::synth::world::QUERY_ID_BASE;

fn alias(weights: Vec<f64>, what: &'static str) -> Result<WeightedAliasIndex<f64>> {
    WeightedAliasIndex::new(weights)
        .map_err(|e| config_error(what, format!("cannot sample requests by it: {e}")))
}

impl Marketplace {
    /// `requests` ad requests as the marketplace's traffic makes them, at uniform times in
    /// `[from_ts, to_ts)`: a user drawn by request rate (their activity), a surface by
    /// `surface_traffic`, and on related pins a context pin, on search a query, drawn as serving
    /// draws them (a category from the user's interests 80% of the time, else from the category
    /// prior; then a pin of it by popularity, or one of its queries uniformly). Each key sees the
    /// user's history strictly before its second. Deterministic for `seed`; sorted by time.
    ///
    /// # Errors
    /// If `from_ts >= to_ts` or the marketplace has no users with requests.
    pub fn traffic(
        &self,
        requests: usize,
        from_ts: i64,
        to_ts: i64,
        seed: u64,
    ) -> Result<Vec<QueryKey>> {
        if from_ts >= to_ts {
            return Err(config_error(
                "traffic",
                format!("an empty time range [{from_ts}, {to_ts})"),
            ));
        }
        let truth = &self.truth;
        let e = &truth.exposure;
        let cfg = &truth.record.config;
        let users = alias(truth.user_request_rate.clone(), "num_users")?;
        let surfaces = alias(cfg.surface_traffic.to_vec(), "surface_traffic")?;
        let categories = alias(
            e.category_prior.iter().map(|&w| f64::from(w)).collect(),
            "num_categories",
        )?;
        let nc = e.category_prior.len();
        let mut category_pins: Vec<Vec<u32>> = vec![Vec::new(); nc];
        for (p, &c) in e.pin_category.iter().enumerate() {
            category_pins[c as usize].push(p as u32);
        }
        let pin_samplers: Vec<Option<WeightedAliasIndex<f64>>> = category_pins
            .iter()
            .map(|pins| {
                let w: Vec<f64> = pins
                    .iter()
                    .map(|&p| f64::from(e.category_share[p as usize]))
                    .collect();
                WeightedAliasIndex::new(w).ok()
            })
            .collect();
        let mut category_queries: Vec<Vec<i64>> = vec![Vec::new(); nc];
        for (q, &c) in e.query_category.iter().enumerate() {
            category_queries[c as usize].push(q as i64);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut keys: Vec<QueryKey> = (0..requests)
            .map(|_| {
                let user = users.sample(&mut rng) as u32;
                let surface = Surface::ALL[surfaces.sample(&mut rng)];
                let ts = rng.random_range(from_ts..to_ts);
                let mut category = || {
                    let interests = e.interests(user);
                    if rng.random_bool(ON_INTEREST) && !interests.is_empty() {
                        let x: f32 = rng.random();
                        let mut cum = 0.0;
                        for &(c, w) in interests {
                            cum += w;
                            if x < cum {
                                return c as usize;
                            }
                        }
                        interests[interests.len() - 1].0 as usize
                    } else {
                        categories.sample(&mut rng)
                    }
                };
                let (context_pin, query_id) = match surface {
                    Surface::HomeFeed => (None, None),
                    Surface::Related => {
                        let c = category();
                        let pin = pin_samplers[c]
                            .as_ref()
                            .map(|s| category_pins[c][s.sample(&mut rng)]);
                        (pin, None)
                    }
                    Surface::Search => {
                        let c = category();
                        let qs = &category_queries[c];
                        let q = (!qs.is_empty())
                            .then(|| QUERY_ID_BASE + qs[rng.random_range(0..qs.len())]);
                        (None, q)
                    }
                };
                QueryKey {
                    user,
                    ts,
                    seq: i64::MIN,
                    surface,
                    context_pin,
                    query_id,
                }
            })
            .collect();
        keys.sort_by_key(|k| (k.ts, k.user));
        Ok(keys)
    }
}
