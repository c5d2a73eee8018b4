use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::schema::{EngagementKind, Surface};
use crate::synth::{Marketplace, SynthConfig};
use crate::truth::GroundTruth;

/// Random (user, pin) pairs behind the correlation figures.
const PAIRS: usize = 20_000;

/// The realised value of every property of docs/design.md's targets table (and a few
/// more), beside the configuration that targeted them. `Display` prints an aligned table.
#[derive(Clone, Debug, PartialEq)]
pub struct RealisedProperties {
    /// The configuration the marketplace was generated from.
    pub config: SynthConfig,
    /// The seed.
    pub seed: u64,
    /// Pins in the catalog.
    pub num_pins: usize,
    /// Distinct advertisers of the catalog's pins.
    pub num_advertisers: usize,
    /// Users.
    pub num_users: usize,
    /// Distinct categories of the catalog's pins.
    pub num_categories: usize,
    /// Impressions.
    pub impressions: usize,
    /// Clicks.
    pub clicks: usize,
    /// Saves.
    pub saves: usize,
    /// True conversions (up to the label horizon).
    pub true_conversions: usize,
    /// Reported conversions in the log (fraud included).
    pub reported_conversions: usize,
    /// Share of impressions that went to the top 1% of pins.
    pub top1_impression_share: f64,
    /// Click-through rate per surface, in [`Surface::index`] order.
    pub ctr: [f64; 3],
    /// Share of clicks that were accidental.
    pub accidental_click_share: f64,
    /// True conversions per click.
    pub true_conversions_per_click: f64,
    /// Reported conversions per click.
    pub reported_conversions_per_click: f64,
    /// Share of true conversions that are view-through (no click).
    pub view_through_share: f64,
    /// Pearson correlation of the coordinates of the click and conversion factors, pooled over
    /// users and pins: the `rho` of docs/design.md, Targets.
    pub factor_correlation: f64,
    /// Pearson correlation of click and conversion affinities over random (user, pin) pairs.
    pub affinity_correlation: f64,
    /// Spearman correlation of `p_click` and `p_conversion_given_click` over random pairs.
    pub click_conversion_rank_correlation: f64,
    /// Median conversion delay, days.
    pub delay_median_days: f64,
    /// 90th percentile of the conversion delay, days.
    pub delay_p90_days: f64,
    /// Share of true conversions never reported.
    pub unreported_share: f64,
    /// Share of reported conversions that are fraudulent.
    pub fake_share: f64,
    /// Share of reported conversions credited to the wrong pin.
    pub misattributed_share: f64,
    /// Mean of the advertisers' reporting rates.
    pub reporting_rate_mean: f64,
    /// Standard deviation of the advertisers' reporting rates.
    pub reporting_rate_sd: f64,
    /// 10th percentile of the advertisers' reporting rates.
    pub reporting_rate_p10: f64,
    /// 90th percentile of the advertisers' reporting rates.
    pub reporting_rate_p90: f64,
    /// Share of advertisers running a conversion campaign.
    pub conversion_campaign_share: f64,
    /// Share of advertisers whose budget binds (taking part in fewer than all auctions).
    pub budget_limited_share: f64,
    /// 10th, 50th and 90th percentiles over advertisers (with at least
    /// [`MIN_ADVERTISER_CLICKS`] logged clicks) of their conversion probability per genuine
    /// click, averaged over their logged clicks.
    pub advertiser_conversion_rate: [f64; 3],
    /// Spearman correlation, over random (user, pin) pairs of pins with a price, of the pin's log
    /// price relative to its category's mean with `p_conversion_given_click` and with `p_click`.
    pub price_rank_correlation: (f64, f64),
    /// Share of pins that are inspiration pins.
    pub inspiration_share: f64,
    /// Click-through rate of inspiration pins' impressions over that of the other pins of the same
    /// categories (impressions weighted per category as the inspiration pins').
    pub inspiration_ctr_ratio: f64,
    /// True conversions per click of inspiration pins over that of the other pins, likewise.
    pub inspiration_conversion_ratio: f64,
    /// Share of true conversions made by the 10% of users of highest purchase intent.
    pub top_intent_conversion_share: f64,
    /// Share of clicks made by the same users.
    pub top_intent_click_share: f64,
    /// Median number of distinct pins a user was shown over the whole log.
    pub shown_per_user_median: usize,
}

/// Logged clicks an advertiser needs to count in [`RealisedProperties::advertiser_conversion_rate`].
pub const MIN_ADVERTISER_CLICKS: usize = 20;

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// Pearson correlation of paired samples (0 for fewer than two pairs or a constant side).
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    ratio(sxy, (sxx * syy).sqrt())
}

/// Ranks (average ranks for ties).
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

/// Spearman rank correlation.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

fn distinct(mut v: Vec<i64>) -> usize {
    v.sort_unstable();
    v.dedup();
    v.len()
}

impl Marketplace {
    /// Realised value of every property of docs/design.md's targets, beside its configured one.
    pub fn realised(&self) -> RealisedProperties {
        let log = &self.log;
        let truth = &self.truth;
        let rec = &truth.record;
        let n_pins = log.pins.len();

        let mut per_pin = vec![0u64; n_pins];
        let pin_index: crate::hash::IdMap<i64, usize> = log
            .pins
            .iter()
            .enumerate()
            .map(|(i, p)| (p.pin_id, i))
            .collect();
        for pin_id in &log.impressions.pin_id {
            if let Some(&i) = pin_index.get(pin_id) {
                per_pin[i] += 1;
            }
        }
        let mechanisms = mechanisms(self, &pin_index, &per_pin);
        per_pin.sort_unstable_by(|a, b| b.cmp(a));
        let top = n_pins.div_ceil(100);
        let top1 = ratio(
            per_pin[..top].iter().sum::<u64>() as f64,
            log.impressions.len() as f64,
        );

        let clicks = log
            .engagements
            .iter()
            .filter(|e| e.kind == EngagementKind::Click)
            .count();
        let saves = log.engagements.len() - clicks;
        let ctr = std::array::from_fn(|s| {
            ratio(
                rec.clicks_per_surface[s] as f64,
                rec.impressions_per_surface[s] as f64,
            )
        });
        let delays = sorted(rec.delays_days.iter().map(|&d| f64::from(d)).collect());
        let reported_total = log.conversions.len() as f64;
        let rates = sorted(
            truth
                .advertiser_reporting_rate
                .iter()
                .map(|&r| f64::from(r))
                .collect(),
        );
        let rate_mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
        let rate_sd = (rates.iter().map(|r| (r - rate_mean).powi(2)).sum::<f64>()
            / rates.len().max(1) as f64)
            .sqrt();
        let (affinity_correlation, click_conversion_rank_correlation) =
            pair_correlations(truth, rec.seed);

        RealisedProperties {
            config: rec.config.clone(),
            seed: rec.seed,
            num_pins: n_pins,
            num_advertisers: distinct(log.pins.iter().map(|p| p.advertiser_id).collect()),
            num_users: log.users.len(),
            num_categories: distinct(log.pins.iter().map(|p| p.category_id).collect()),
            impressions: log.impressions.len(),
            clicks,
            saves,
            true_conversions: self.true_conversions.len(),
            reported_conversions: log.conversions.len(),
            top1_impression_share: top1,
            ctr,
            accidental_click_share: ratio(rec.accidental_clicks as f64, clicks as f64),
            true_conversions_per_click: ratio(self.true_conversions.len() as f64, clicks as f64),
            reported_conversions_per_click: ratio(reported_total, clicks as f64),
            view_through_share: ratio(
                rec.view_through_conversions as f64,
                self.true_conversions.len() as f64,
            ),
            factor_correlation: factor_correlation(truth),
            affinity_correlation,
            click_conversion_rank_correlation,
            delay_median_days: quantile(&delays, 0.5),
            delay_p90_days: quantile(&delays, 0.9),
            unreported_share: 1.0
                - ratio(
                    rec.reported_genuine as f64,
                    self.true_conversions.len() as f64,
                ),
            fake_share: ratio(rec.fake as f64, reported_total),
            misattributed_share: ratio(rec.misattributed as f64, reported_total),
            reporting_rate_mean: rate_mean,
            reporting_rate_sd: rate_sd,
            reporting_rate_p10: quantile(&rates, 0.1),
            reporting_rate_p90: quantile(&rates, 0.9),
            conversion_campaign_share: ratio(
                truth
                    .advertiser_target_cpa
                    .iter()
                    .filter(|t| t.is_some())
                    .count() as f64,
                truth.advertiser_target_cpa.len() as f64,
            ),
            budget_limited_share: ratio(
                truth
                    .advertiser_participation
                    .iter()
                    .filter(|&&r| r < 1.0)
                    .count() as f64,
                truth.advertiser_participation.len() as f64,
            ),
            price_rank_correlation: price_correlations(self, rec.seed),
            inspiration_share: ratio(
                truth.pin_inspiration.iter().filter(|&&i| i).count() as f64,
                n_pins as f64,
            ),
            advertiser_conversion_rate: mechanisms.advertiser_conversion_rate,
            inspiration_ctr_ratio: mechanisms.inspiration_ctr_ratio,
            inspiration_conversion_ratio: mechanisms.inspiration_conversion_ratio,
            top_intent_conversion_share: mechanisms.top_intent_conversion_share,
            top_intent_click_share: mechanisms.top_intent_click_share,
            shown_per_user_median: mechanisms.shown_per_user_median,
        }
    }
}

/// The realised properties computed in one pass over the log's impressions and clicks.
struct Mechanisms {
    advertiser_conversion_rate: [f64; 3],
    inspiration_ctr_ratio: f64,
    inspiration_conversion_ratio: f64,
    top_intent_conversion_share: f64,
    top_intent_click_share: f64,
    shown_per_user_median: usize,
}

/// Per pin: impressions, clicks and true conversions.
#[derive(Clone, Copy, Default)]
struct PinCounts {
    impressions: f64,
    clicks: f64,
    conversions: f64,
}

/// `impressions[p]`: the impressions of pin `p` (in `log.pins` order).
fn mechanisms(
    market: &Marketplace,
    pin_index: &crate::hash::IdMap<i64, usize>,
    impressions: &[u64],
) -> Mechanisms {
    let log = &market.log;
    let truth = &market.truth;
    let imps = &log.impressions;
    let user_index: crate::hash::IdMap<i64, usize> = log
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.user_id, i))
        .collect();
    let impression_index: crate::hash::IdMap<i64, usize> = imps
        .impression_id
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let n_adv = truth.advertiser_participation.len();
    let mut pins: Vec<PinCounts> = impressions
        .iter()
        .map(|&n| PinCounts {
            impressions: n as f64,
            ..PinCounts::default()
        })
        .collect();
    // Advertisers' conversion probability per genuine click, over their logged clicks (accidental
    // clicks are a share independent of the pin, so they do not bias the mean).
    let mut adv_rate = vec![(0f64, 0usize); n_adv];
    let mut user_clicks = vec![0f64; log.users.len()];
    for e in &log.engagements {
        if e.kind != EngagementKind::Click {
            continue;
        }
        let Some(&i) = impression_index.get(&e.impression_id) else {
            continue;
        };
        let (Some(&u), Some(&p)) = (
            user_index.get(&imps.user_id[i]),
            pin_index.get(&imps.pin_id[i]),
        ) else {
            continue;
        };
        pins[p].clicks += 1.0;
        user_clicks[u] += 1.0;
        let a = &mut adv_rate[truth.pin_advertiser[p] as usize];
        a.0 += f64::from(truth.p_conversion_given_genuine_click(u as u32, p as u32));
        a.1 += 1;
    }
    let mut user_conversions = vec![0f64; log.users.len()];
    for c in &market.true_conversions {
        if let (Some(&u), Some(&p)) = (user_index.get(&c.user_id), pin_index.get(&c.pin_id)) {
            pins[p].conversions += 1.0;
            user_conversions[u] += 1.0;
        }
    }
    let rates = sorted(
        adv_rate
            .iter()
            .filter(|(_, n)| *n >= MIN_ADVERTISER_CLICKS)
            .map(|(s, n)| s / *n as f64)
            .collect(),
    );
    // Inspiration pins against the other pins of their categories: per category, the others'
    // rates weighted by the inspiration pins' impressions there.
    let mut per_category: std::collections::BTreeMap<i64, [PinCounts; 2]> = Default::default();
    for (p, counts) in pins.iter().enumerate() {
        let slot = &mut per_category.entry(log.pins[p].category_id).or_default()
            [usize::from(truth.pin_inspiration[p])];
        slot.impressions += counts.impressions;
        slot.clicks += counts.clicks;
        slot.conversions += counts.conversions;
    }
    let (mut insp, mut others_ctr, mut others_conv) = (PinCounts::default(), 0.0, 0.0);
    for [other, inspiring] in per_category.values() {
        if inspiring.impressions == 0.0 || other.impressions == 0.0 {
            continue;
        }
        insp.impressions += inspiring.impressions;
        insp.clicks += inspiring.clicks;
        insp.conversions += inspiring.conversions;
        others_ctr += inspiring.impressions * ratio(other.clicks, other.impressions);
        if other.clicks > 0.0 {
            others_conv += inspiring.clicks * other.conversions / other.clicks;
        }
    }
    // Purchase intent: the top decile of users by intent.
    let mut by_intent: Vec<usize> = (0..log.users.len()).collect();
    by_intent.sort_by(|&a, &b| truth.user_intent[b].total_cmp(&truth.user_intent[a]));
    let top = &by_intent[..log.users.len().div_ceil(10)];
    let share_of = |v: &[f64]| ratio(top.iter().map(|&u| v[u]).sum(), v.iter().sum());
    Mechanisms {
        advertiser_conversion_rate: [
            quantile(&rates, 0.1),
            quantile(&rates, 0.5),
            quantile(&rates, 0.9),
        ],
        inspiration_ctr_ratio: ratio(insp.clicks, others_ctr),
        inspiration_conversion_ratio: ratio(insp.conversions, others_conv),
        top_intent_conversion_share: share_of(&user_conversions),
        top_intent_click_share: share_of(&user_clicks),
        shown_per_user_median: market.distinct_pins_shown(i64::MIN).0,
    }
}

impl Marketplace {
    /// The median over users of the distinct pins each was shown from `from_ts` on, and the
    /// number of users shown any pin then.
    pub fn distinct_pins_shown(&self, from_ts: i64) -> (usize, usize) {
        let imps = &self.log.impressions;
        let mut pairs: Vec<(i64, i64)> = imps
            .ts
            .iter()
            .zip(imps.user_id.iter().zip(&imps.pin_id))
            .filter(|(t, _)| **t >= from_ts)
            .map(|(_, (&u, &p))| (u, p))
            .collect();
        pairs.sort_unstable();
        pairs.dedup();
        let mut per_user: Vec<usize> = Vec::new();
        let mut last = None;
        for (u, _) in pairs {
            match per_user.last_mut() {
                Some(n) if last == Some(u) => *n += 1,
                _ => {
                    per_user.push(1);
                    last = Some(u);
                }
            }
        }
        per_user.sort_unstable();
        (
            per_user.get(per_user.len() / 2).copied().unwrap_or(0),
            per_user.len(),
        )
    }
}

/// Spearman correlations of relative log price with `p_conversion_given_click` and `p_click`
/// over random (user, priced pin) pairs.
fn price_correlations(market: &Marketplace, seed: u64) -> (f64, f64) {
    let truth = &market.truth;
    let pins = &market.log.pins;
    let mut sums: crate::hash::IdMap<i64, (f64, f64)> = Default::default();
    for p in pins {
        if let Some(price) = p.price {
            let e = sums.entry(p.category_id).or_insert((0.0, 0.0));
            e.0 += f64::from(price).ln();
            e.1 += 1.0;
        }
    }
    let priced: Vec<usize> = (0..pins.len())
        .filter(|&i| pins[i].price.is_some())
        .collect();
    if priced.is_empty() || truth.num_users() == 0 {
        return (0.0, 0.0);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX - 1);
    let (mut rel, mut conv, mut click) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..PAIRS {
        let u = rng.random_range(0..truth.num_users()) as u32;
        let p = priced[rng.random_range(0..priced.len())];
        let pin = &pins[p];
        let (sum, n) = sums[&pin.category_id];
        rel.push(f64::from(pin.price.unwrap_or(1.0)).ln() - sum / n);
        conv.push(f64::from(truth.p_conversion_given_click(u, p as u32)));
        click.push(f64::from(truth.p_click(u, p as u32, Surface::HomeFeed)));
    }
    (spearman(&rel, &conv), spearman(&rel, &click))
}

fn factor_correlation(truth: &GroundTruth) -> f64 {
    let click = truth
        .user_click
        .iter()
        .chain(&truth.pin_click)
        .map(|&x| f64::from(x));
    let conv = truth
        .user_conv
        .iter()
        .chain(&truth.pin_conv)
        .map(|&x| f64::from(x));
    let x: Vec<f64> = click.collect();
    let y: Vec<f64> = conv.collect();
    pearson(&x, &y)
}

fn pair_correlations(truth: &GroundTruth, seed: u64) -> (f64, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(u64::MAX - 1);
    let (nu, np) = (truth.num_users(), truth.num_pins());
    let mut ca = Vec::with_capacity(PAIRS);
    let mut va = Vec::with_capacity(PAIRS);
    let mut pc = Vec::with_capacity(PAIRS);
    let mut pv = Vec::with_capacity(PAIRS);
    for _ in 0..PAIRS {
        let u = rng.random_range(0..nu) as u32;
        let p = rng.random_range(0..np) as u32;
        ca.push(f64::from(truth.click_affinity(u, p)));
        va.push(f64::from(truth.conversion_affinity(u, p)));
        pc.push(f64::from(truth.p_click(u, p, Surface::HomeFeed)));
        pv.push(f64::from(truth.p_conversion_given_click(u, p)));
    }
    (pearson(&ca, &va), spearman(&pc, &pv))
}

impl fmt::Display for RealisedProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let pct = |x: f64| format!("{:.2}%", 100.0 * x);
        let rows: Vec<(String, String, String)> = vec![
            (
                "pins / advertisers / users".into(),
                format!(
                    ">= 100000 / 2000 / 50000 (config {} / {} / {})",
                    c.num_pins, c.num_advertisers, c.num_users
                ),
                format!(
                    "{} / {} / {}",
                    self.num_pins, self.num_advertisers, self.num_users
                ),
            ),
            (
                "categories".into(),
                c.num_categories.to_string(),
                self.num_categories.to_string(),
            ),
            (
                "impressions".into(),
                format!("~{}", c.impressions),
                self.impressions.to_string(),
            ),
            (
                "clicks / saves".into(),
                "saves rarer than clicks".into(),
                format!("{} / {}", self.clicks, self.saves),
            ),
            (
                "top-1% pins' impression share".into(),
                "15-30%".into(),
                pct(self.top1_impression_share),
            ),
            (
                "CTR homefeed / related / search".into(),
                "per-surface".into(),
                format!(
                    "{} / {} / {}",
                    pct(self.ctr[0]),
                    pct(self.ctr[1]),
                    pct(self.ctr[2])
                ),
            ),
            (
                "accidental clicks".into(),
                pct(c.accidental_click_share),
                pct(self.accidental_click_share),
            ),
            (
                "true conversions per click".into(),
                "0.5-2%".into(),
                pct(self.true_conversions_per_click),
            ),
            (
                "reported conversions per click".into(),
                "0.5-2%".into(),
                pct(self.reported_conversions_per_click),
            ),
            (
                "view-through share of conversions".into(),
                "rare".into(),
                pct(self.view_through_share),
            ),
            (
                "rho (click/conversion factor correlation)".into(),
                format!("{:.2}", c.rho),
                format!("{:.3}", self.factor_correlation),
            ),
            (
                "click/conversion affinity correlation".into(),
                "below 1".into(),
                format!("{:.3}", self.affinity_correlation),
            ),
            (
                "rank corr. p_click vs p_conv|click".into(),
                "well below 1".into(),
                format!("{:.3}", self.click_conversion_rank_correlation),
            ),
            (
                "conversion delay median (days)".into(),
                "about 1".into(),
                format!("{:.2}", self.delay_median_days),
            ),
            (
                "conversion delay p90 (days)".into(),
                "> 5".into(),
                format!("{:.2}", self.delay_p90_days),
            ),
            (
                "unreported true conversions".into(),
                "about 20%".into(),
                pct(self.unreported_share),
            ),
            (
                "reported: fake + wrong pin".into(),
                "5-10%".into(),
                format!(
                    "{} ({} + {})",
                    pct(self.fake_share + self.misattributed_share),
                    pct(self.fake_share),
                    pct(self.misattributed_share)
                ),
            ),
            (
                "advertiser reporting rate mean / sd".into(),
                format!("{:.2} / varies", c.reporting_rate_mean),
                format!(
                    "{:.3} / {:.3} (p10 {:.2}, p90 {:.2})",
                    self.reporting_rate_mean,
                    self.reporting_rate_sd,
                    self.reporting_rate_p10,
                    self.reporting_rate_p90
                ),
            ),
            (
                "conversion campaigns (share of advertisers)".into(),
                pct(c.conversion_campaign_share),
                pct(self.conversion_campaign_share),
            ),
            (
                "budget-limited advertisers".into(),
                pct(c.budget_limited_share),
                pct(self.budget_limited_share),
            ),
            (
                "advertisers' conv. per genuine click p10/50/90".into(),
                "~0.1% to ~10%, p90 >= 10x p10".into(),
                format!(
                    "{} / {} / {} ({:.1}x)",
                    pct(self.advertiser_conversion_rate[0]),
                    pct(self.advertiser_conversion_rate[1]),
                    pct(self.advertiser_conversion_rate[2]),
                    ratio(
                        self.advertiser_conversion_rate[2],
                        self.advertiser_conversion_rate[0]
                    )
                ),
            ),
            (
                "rank corr. relative price vs p_conv|click / p_click".into(),
                "negative / about 0".into(),
                format!(
                    "{:+.3} / {:+.3}",
                    self.price_rank_correlation.0, self.price_rank_correlation.1
                ),
            ),
            (
                "inspiration pins: share, CTR and conv./click vs category".into(),
                format!("{}, CTR above, conv. far below", pct(c.inspiration_share)),
                format!(
                    "{}, {:.2}x, {:.2}x",
                    pct(self.inspiration_share),
                    self.inspiration_ctr_ratio,
                    self.inspiration_conversion_ratio
                ),
            ),
            (
                "top 10% users by intent: share of conv. / clicks".into(),
                "most conversions".into(),
                format!(
                    "{} / {}",
                    pct(self.top_intent_conversion_share),
                    pct(self.top_intent_click_share)
                ),
            ),
            (
                "distinct pins shown per user (median)".into(),
                "broad".into(),
                self.shown_per_user_median.to_string(),
            ),
            (
                "true / reported conversions".into(),
                "sparse".into(),
                format!("{} / {}", self.true_conversions, self.reported_conversions),
            ),
        ];
        let header = (
            "property".to_owned(),
            "target".to_owned(),
            "realised".to_owned(),
        );
        let w0 = rows
            .iter()
            .map(|r| r.0.len())
            .chain([header.0.len()])
            .max()
            .unwrap_or(0);
        let w1 = rows
            .iter()
            .map(|r| r.1.len())
            .chain([header.1.len()])
            .max()
            .unwrap_or(0);
        writeln!(f, "{:<w0$} | {:<w1$} | {}", header.0, header.1, header.2)?;
        writeln!(
            f,
            "{}-+-{}-+-{}",
            "-".repeat(w0),
            "-".repeat(w1),
            "-".repeat(8)
        )?;
        for (a, b, r) in rows {
            writeln!(f, "{a:<w0$} | {b:<w1$} | {r}")?;
        }
        Ok(())
    }
}
