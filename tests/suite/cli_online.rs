//! `convcg compare` and `convcg report` on two tiny hand-made metrics.json files.

use crate::support::convcg;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use convcg::{LossPoint, Metrics, OnlineFigures, OnlineMetrics};
use convcg_eval::{AuctionConfig, OnlineLift, ServingOutcome};

fn recall(values: &[(usize, f64)]) -> BTreeMap<String, f64> {
    values
        .iter()
        .map(|&(k, v)| (format!("recall@{k}"), v))
        .collect()
}

fn outcome(impressions: f64, conversions: f64, value: f64, cost: f64) -> ServingOutcome {
    ServingOutcome {
        queries: 1000,
        queries_with_ads: 800,
        ads_shown: 2000,
        impressions,
        clicks: 30.0,
        conversions,
        value,
        cost,
    }
}

/// A run: recall of the model, its home-feed recall, a loss curve, and the simulated serving of
/// the model and popularity.
fn metrics(
    conv: [f64; 2],
    eng: f64,
    homefeed: f64,
    model: ServingOutcome,
    popularity: ServingOutcome,
) -> Metrics {
    let mut m = Metrics::default();
    m.model.conversion = recall(&[(50, conv[0]), (100, conv[1])]);
    m.model.engagement = recall(&[(100, eng)]);
    m.popularity.conversion = recall(&[(50, 0.03), (100, 0.08)]);
    let surfaces = m.surfaces.entry("model".to_owned()).or_default();
    surfaces.conversion.insert(
        "homefeed".to_owned(),
        serde_json::from_value(serde_json::json!({
            "queries": 10, "skipped_without_relevant": 0, "recall": {"recall@100": homefeed}
        }))
        .unwrap(),
    );
    m.eval.corpus_pins = 5000;
    m.eval.conversion_queries = 1000;
    m.eval.engagement_queries = 1000;
    m.training.steps = 300;
    m.training.loss_curve = (1..=6)
        .map(|i| LossPoint {
            step: 50 * i,
            loss: 3.0 / i as f64,
        })
        .collect();
    let mut online = OnlineMetrics {
        auction: AuctionConfig::default(),
        ..OnlineMetrics::default()
    };
    online
        .retrievers
        .insert("model".to_owned(), OnlineFigures::from(model));
    online
        .retrievers
        .insert("popularity".to_owned(), OnlineFigures::from(popularity));
    online
        .lift_vs_popularity
        .insert("model".to_owned(), OnlineLift::between(&popularity, &model));
    m.online = Some(online);
    m
}

/// A's model, with the oracles of the synthetic marketplace and the model-against-popularity
/// block of the table (NDCG), on a log without advertisers.
fn run_a() -> Metrics {
    let pop = outcome(1200.0, 0.2, 5.0, 20.0);
    let mut m = metrics([0.4, 0.5], 0.3, 0.45, outcome(1500.0, 0.5, 20.0, 25.0), pop);
    let oracle = |at50, at100| convcg::RetrieverMetrics {
        conversion: recall(&[(50, at50), (100, at100)]),
        ..convcg::RetrieverMetrics::default()
    };
    m.oracle = Some(oracle(0.8, 0.9));
    m.oracle_clicks = Some(oracle(0.7, 0.85));
    m.ndcg.entry("model".to_owned()).or_default().conversion =
        [("ndcg@100".to_owned(), 0.3)].into();
    m
}

/// The y of the first `<text>` element whose content is `label`.
fn text_y(svg: &str, label: &str) -> Option<f64> {
    let end = svg.find(&format!(">\n{label}\n</text>"))?;
    let start = svg[..end].rfind("<text")?;
    attribute(&svg[start..end], "y")
}

fn attribute(element: &str, name: &str) -> Option<f64> {
    let at = element.find(&format!(" {name}=\""))? + name.len() + 3;
    element[at..].split('"').next()?.parse().ok()
}

/// The largest y of any point of the plotted series (polylines of stroke width 2; the
/// legend's short lines are 3 wide).
fn lowest_line(svg: &str) -> f64 {
    svg.split("<polyline")
        .skip(1)
        .map(|p| &p[..p.find("/>").unwrap_or(p.len())])
        .filter(|p| p.contains("stroke-width=\"2\""))
        .filter_map(|p| p.split("points=\"").nth(1)?.split('"').next())
        .flat_map(|points| points.split_whitespace())
        .filter_map(|xy| xy.split(',').nth(1)?.parse::<f64>().ok())
        .fold(f64::NEG_INFINITY, f64::max)
}

/// B's model: +2.3% conversions, over 1494 impressions (+2.7% impression-to-conversion), and
/// value / cost +3.1%.
fn run_b() -> Metrics {
    let pop = outcome(1200.0, 0.2, 5.0, 20.0);
    metrics(
        [0.42, 0.55],
        0.33,
        0.5,
        outcome(1494.0, 0.5115, 21.0, 25.4625),
        pop,
    )
}

fn write_run(dir: &Path, m: &Metrics) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("metrics.json"),
        serde_json::to_string_pretty(m).unwrap(),
    )
    .unwrap();
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn compare_prints_the_paper_style_lifts_and_recall_deltas() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_run(&a, &run_a());
    write_run(&b, &run_b());
    let text = stdout_of(convcg().arg("compare").arg(&a).arg(&b));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("A: {}", a.join("metrics.json").display()));
    assert_eq!(lines[1], format!("B: {}", b.join("metrics.json").display()));
    assert!(!text.contains("warning"), "{text}");
    for want in [
        "model, simulated serving                     A           B    B vs A",
        "conversion volume (per 1k queries)      0.5000      0.5115     +2.3%",
        "impression-to-conversion (%)            0.0333      0.0342     +2.7%",
        "RoAS                                     0.800       0.825     +3.1%",
        "B vs A: +2.3% conversion volume, +2.7% impression-to-conversion, +3.1% RoAS",
        "model recall@K",
        "task        surface        K         A         B     delta  relative",
        "conversion  all           50    0.4000    0.4200   +0.0200     +5.0%",
        "conversion  all          100    0.5000    0.5500   +0.0500    +10.0%",
        "conversion  homefeed     100    0.4500    0.5000   +0.0500    +11.1%",
        "engagement  all          100    0.3000    0.3300   +0.0300    +10.0%",
    ] {
        assert!(lines.contains(&want), "missing line {want:?} in:\n{text}");
    }
    // Only the figures both runs have: no related, search or engagement-surface rows.
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("conversion  "))
            .count(),
        3
    );

    let json = stdout_of(convcg().args(["compare", "--json"]).arg(&a).arg(&b));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let lift = v["online"]["lift"]["conversion_volume"].as_f64().unwrap();
    assert!((lift - 2.3).abs() < 1e-9, "{lift}");
    assert_eq!(v["recall"].as_array().unwrap().len(), 4);
}

#[test]
fn compare_warns_when_the_baselines_differ() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_run(&a, &run_a());
    let mut other = run_b();
    let online = other.online.as_mut().unwrap();
    online
        .retrievers
        .get_mut("popularity")
        .unwrap()
        .outcome
        .conversions = 0.3;
    write_run(&b, &other);
    let text = stdout_of(convcg().arg("compare").arg(&a).arg(&b));
    assert!(
        text.contains("warning: the runs' popularity baselines differ"),
        "{text}"
    );
}

#[test]
fn compare_of_a_run_without_online_figures_prints_the_recall_deltas_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_run(&a, &run_a());
    let mut offline = run_b();
    offline.online = None;
    write_run(&b, &offline);
    let text = stdout_of(convcg().arg("compare").arg(&a).arg(&b));
    let file = b.join("metrics.json").display().to_string();
    assert!(
        text.contains(
            "no simulated serving: online figures need the synthetic marketplace's ground truth"
        ) && text.contains(&format!("  {file} has no `online` section")),
        "{text}"
    );
    assert!(!text.contains("B vs A"), "{text}");
    assert!(
        text.contains("conversion  all          100    0.5000    0.5500   +0.0500    +10.0%\n"),
        "{text}"
    );
    // Hand-made runs have no per_query.json: no intervals, and the reason.
    assert!(
        text.contains("no interval: run A has no per_query.json beside"),
        "{text}"
    );
    let json = stdout_of(convcg().args(["compare", "--json"]).arg(&a).arg(&b));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(
        v["online"].is_null() && v["recall"][0]["interval"].is_null(),
        "{json}"
    );
}

#[test]
fn compare_names_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    write_run(&a, &run_a());

    let missing = dir.path().join("nowhere");
    let out = convcg()
        .arg("compare")
        .arg(&a)
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot read") && err.contains("nowhere"),
        "{err}"
    );
}

/// A decoded PNG: (width, height, share of pixels that are not white).
fn decode_png(path: &Path) -> (u32, u32, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels = &buf[..info.buffer_size()];
    let inked = pixels
        .chunks_exact(3)
        .filter(|p| p != &[255, 255, 255])
        .count();
    (
        info.width,
        info.height,
        inked as f64 / (pixels.len() / 3) as f64,
    )
}

#[test]
fn report_renders_charts_and_a_summary_for_one_and_several_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_run(&a, &run_a());
    write_run(&b, &run_b());

    // One run, into its own report/ folder.
    let text = stdout_of(convcg().arg("report").arg(&a));
    assert!(text.contains("10 charts"), "{text}");
    let single = a.join("report");
    let md = std::fs::read_to_string(single.join("report.md")).unwrap();
    for name in [
        "loss",
        "recall_conversion",
        "recall_engagement",
        "recall_conversion_surfaces",
        "recall_engagement_surfaces",
    ] {
        assert!(md.contains(&format!("({name}.svg)")), "{md}");
        assert!(md.contains(&format!("({name}.png)")), "{md}");
        let png = single.join(format!("{name}.png"));
        assert!(std::fs::metadata(&png).unwrap().len() > 5_000, "{name}.png");
        let (w, h, inked) = decode_png(&png);
        assert!(w >= 900 && h >= 400, "{name}: {w} x {h}");
        // Axes, lines and text, on a mostly white page.
        assert!(inked > 0.01 && inked < 0.5, "{name}: {inked}");
    }
    let svg = std::fs::read_to_string(single.join("loss.svg")).unwrap();
    assert!(
        svg.contains("training loss") && svg.contains("<text"),
        "{svg}"
    );
    let svg = std::fs::read_to_string(single.join("recall_conversion.svg")).unwrap();
    assert!(svg.contains("conversion recall@K"));
    assert!(
        svg.contains("K (log scale)"),
        "the K axis says it is logarithmic"
    );
    for label in ["oracle", "oracle of clicks"] {
        let y = text_y(&svg, label).unwrap_or_else(|| panic!("no legend entry {label}"));
        assert!(
            y > lowest_line(&svg),
            "the legend entry {label} at y {y} overlaps the plotted lines"
        );
    }
    let surfaces = std::fs::read_to_string(single.join("recall_conversion_surfaces.svg")).unwrap();
    assert!(surfaces.contains("homefeed (10 queries)"), "{surfaces}");
    assert!(surfaces.contains("search (0 queries)"), "{surfaces}");
    let table = run_a().table();
    let block = &table[table
        .find("conversion task, K = 100")
        .expect("the K = 100 block")..];
    assert!(!block.contains("NaN"), "{table}");
    assert!(
        table.contains("recall@100 homefeed (10 q)") && !table.contains("search (0 q)"),
        "{table}"
    );
    assert!(
        !table.contains("advertiser recall"),
        "no advertiser was measured:\n{table}"
    );
    assert!(
        svg.contains("popularity"),
        "a single run shows its reference points"
    );
    assert!(
        md.contains("model vs popularity: +150.0% conversion volume"),
        "{md}"
    );

    // Two runs overlaid, into --out.
    let out = dir.path().join("both");
    stdout_of(
        convcg()
            .arg("report")
            .arg(&a)
            .arg(&b)
            .arg("--out")
            .arg(&out),
    );
    let svg = std::fs::read_to_string(out.join("recall_conversion.svg")).unwrap();
    assert!(svg.contains("model of each run"), "{svg}");
    assert!(
        svg.contains(">\na\n</text>") && svg.contains(">\nb\n</text>"),
        "one line per run, labelled"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains(
            "b vs a (models): +2.3% conversion volume, +2.7% impression-to-conversion, +3.1% RoAS"
        ),
        "{md}"
    );
    assert!(
        md.contains("| b | conversion | 0.5500 | +0.0500 (+10.0%) |"),
        "{md}"
    );

    // A run on other data: overlaid with a warning, on stderr and in report.md.
    let c = dir.path().join("c");
    let mut other = run_b();
    other.eval.corpus_pins = 700;
    write_run(&c, &other);
    let out = dir.path().join("mixed");
    let done = convcg()
        .arg("report")
        .arg(&a)
        .arg(&c)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(done.status.success());
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(
        err.contains("evaluated on different data (5000 / 700 pins"),
        "{err}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("evaluated on different data"), "{md}");

    let out = convcg()
        .arg("report")
        .arg(dir.path().join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
}
