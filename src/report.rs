//! `convcg report RUN_DIR... [--out DIR]`: charts of one or several runs as PNG and SVG, and a
//! markdown summary that links them.
//!
//! Charts: the training loss curve; recall@K against K (log scale) per task; and recall@K per
//! surface, one panel per surface, per task. One run shows every retriever (the model and the
//! reference points); several runs overlay their models' curves, one colour per run, so the
//! charts compare them. Text is drawn with DejaVu Sans, embedded in the binary
//! (`assets/fonts/`, its licence beside it), so that no system font library is needed.

use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

use convcg_data::Surface;
use convcg_eval::{OnlineLift, RECALL_KS};

use crate::compare::{read_metrics, require_evaluation};
use crate::metrics::{Metrics, RetrieverMetrics, SurfaceRecall};
use crate::output::write_atomic;

/// The family name the embedded font is registered under (and that the SVG files name).
const FONT: &str = "sans-serif";
/// DejaVu Sans (Debian's fonts-dejavu-core; licence in `assets/fonts/LICENSE-DejaVu`).
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// One colour per series, in order (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The retrievers a single-run chart shows, in legend order.
const RETRIEVERS: [&str; 6] = [
    "model",
    "popularity",
    "recently_seen",
    "random",
    "oracle",
    "oracle_clicks",
];

/// The x axis' name on the recall charts, whose K axis is logarithmic.
const K_AXIS: &str = "K (log scale)";

/// Registers the embedded font with plotters, once per process.
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        bail!("the embedded DejaVu Sans font does not load")
    }
}

/// One line of a chart.
#[derive(Clone, Debug)]
struct Series {
    label: String,
    points: Vec<(f64, f64)>,
}

/// One chart panel.
#[derive(Clone, Debug)]
struct Panel {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    /// Log-scale x axis (recall@K against K).
    x_log: bool,
    series: Vec<Series>,
}

/// Panels side by side, written as `NAME.png` and `NAME.svg`.
#[derive(Clone, Debug)]
struct Figure {
    name: String,
    title: String,
    panels: Vec<Panel>,
}

/// A run as the report names it.
struct Run {
    label: String,
    file: PathBuf,
    metrics: Metrics,
}

/// What [`write_report`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportFiles {
    /// The markdown summary.
    pub markdown: PathBuf,
    /// Every chart file (PNG and SVG), in the order written.
    pub charts: Vec<PathBuf>,
    /// What the reader should know before comparing the curves (runs on different data), also
    /// at the top of `report.md`.
    pub warnings: Vec<String>,
}

/// The folder `convcg report RUN_DIR` writes by default, inside the run directory.
pub const REPORT_DIR: &str = "report";

/// Where `convcg report` writes by default: `report/` inside the first run's directory (beside
/// its `metrics.json` when a file was given).
pub fn default_report_dir(first_run: &Path) -> PathBuf {
    if first_run.is_dir() {
        first_run.join(REPORT_DIR)
    } else {
        first_run
            .parent()
            .unwrap_or(Path::new("."))
            .join(REPORT_DIR)
    }
}

/// Renders the charts of the runs `runs` (run directories or `metrics.json` files) into `out`
/// (created if missing), each as PNG and SVG, and `report.md` linking them with the key
/// numbers. Every file is written atomically.
///
/// # Errors
/// If no run is given, a `metrics.json` cannot be read, or a chart or file cannot be written.
pub fn write_report(runs: &[PathBuf], out: &Path) -> Result<ReportFiles> {
    if runs.is_empty() {
        bail!("no run to report on");
    }
    register_font()?;
    let runs = runs
        .iter()
        .map(|path| {
            let (file, metrics) = read_metrics(path)?;
            require_evaluation(&file, &metrics)?;
            Ok((file, metrics))
        })
        .collect::<Result<Vec<_>>>()?;
    let runs = label_runs(runs);
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create the report directory {}", out.display()))?;
    let mut charts = Vec::new();
    let figures = figures(&runs);
    for fig in &figures {
        let (svg, png) = render(fig)?;
        for (ext, bytes) in [("svg", svg.as_bytes()), ("png", png.as_slice())] {
            let path = out.join(format!("{}.{ext}", fig.name));
            write_atomic(&path, bytes)?;
            charts.push(path);
        }
    }
    let warnings = dataset_warnings(&runs);
    let markdown = out.join("report.md");
    write_atomic(&markdown, summary(&runs, &figures, &warnings).as_bytes())?;
    Ok(ReportFiles {
        markdown,
        charts,
        warnings,
    })
}

/// Names runs by their directory (the folder holding `metrics.json`), numbered where two would
/// read the same.
fn label_runs(runs: Vec<(PathBuf, Metrics)>) -> Vec<Run> {
    let name = |file: &Path| {
        file.parent().and_then(Path::file_name).map_or_else(
            || file.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let names: Vec<String> = runs.iter().map(|(f, _)| name(f)).collect();
    runs.into_iter()
        .enumerate()
        .map(|(i, (file, metrics))| {
            let label = if names.iter().filter(|n| **n == names[i]).count() > 1 {
                format!("{} ({})", names[i], i + 1)
            } else {
                names[i].clone()
            };
            Run {
                label,
                file,
                metrics,
            }
        })
        .collect()
}

/// recall@K against K, for every K of [`RECALL_KS`] the map has.
fn recall_points(m: &std::collections::BTreeMap<String, f64>) -> Vec<(f64, f64)> {
    RECALL_KS
        .iter()
        .filter_map(|&k| m.get(&format!("recall@{k}")).map(|&v| (k as f64, v)))
        .collect()
}

fn task_recall<'m>(
    r: &'m RetrieverMetrics,
    task: &str,
) -> &'m std::collections::BTreeMap<String, f64> {
    if task == "conversion" {
        &r.conversion
    } else {
        &r.engagement
    }
}

fn retriever<'m>(m: &'m Metrics, name: &str) -> Option<&'m RetrieverMetrics> {
    match name {
        "model" => Some(&m.model),
        "popularity" => Some(&m.popularity),
        "recently_seen" => Some(&m.recently_seen),
        "random" => Some(&m.random),
        "oracle" => m.oracle.as_ref(),
        "oracle_clicks" => m.oracle_clicks.as_ref(),
        _ => None,
    }
}

/// The lines of a recall chart: every retriever of a single run, or each run's model.
fn recall_series(runs: &[Run], points: impl Fn(&Metrics, &str) -> Vec<(f64, f64)>) -> Vec<Series> {
    let series: Vec<Series> = if let [run] = runs {
        RETRIEVERS
            .iter()
            .map(|&name| Series {
                label: match name {
                    "oracle_clicks" => "oracle of clicks".to_owned(),
                    _ => name.replace('_', " "),
                },
                points: points(&run.metrics, name),
            })
            .collect()
    } else {
        runs.iter()
            .map(|run| Series {
                label: run.label.clone(),
                points: points(&run.metrics, "model"),
            })
            .collect()
    };
    series
        .into_iter()
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// Every figure of the report.
fn figures(runs: &[Run]) -> Vec<Figure> {
    let several = runs.len() > 1;
    let whose = if several { ", model of each run" } else { "" };
    let mut out = vec![Figure {
        name: "loss".into(),
        title: String::new(),
        panels: vec![Panel {
            title: "training loss".into(),
            x_label: "step",
            y_label: "mean batch loss",
            x_log: false,
            series: runs
                .iter()
                .map(|run| Series {
                    label: run.label.clone(),
                    points: run
                        .metrics
                        .training
                        .loss_curve
                        .iter()
                        .map(|p| (p.step as f64, p.loss))
                        .collect(),
                })
                .filter(|s| !s.points.is_empty())
                .collect(),
        }],
    }];
    for task in ["conversion", "engagement"] {
        out.push(Figure {
            name: format!("recall_{task}"),
            title: String::new(),
            panels: vec![Panel {
                title: format!("{task} recall@K{whose}"),
                x_label: K_AXIS,
                y_label: "recall@K",
                x_log: true,
                series: recall_series(runs, |m, name| {
                    retriever(m, name)
                        .map_or_else(Vec::new, |r| recall_points(task_recall(r, task)))
                }),
            }],
        });
    }
    for task in ["conversion", "engagement"] {
        let panels = Surface::ALL
            .iter()
            .map(|s| {
                let surface = s.as_str();
                let counts: Vec<String> = runs
                    .iter()
                    .map(|run| surface_queries(&run.metrics, task, surface).to_string())
                    .collect();
                Panel {
                    title: format!("{surface} ({} queries)", counts.join(" / ")),
                    x_label: K_AXIS,
                    y_label: "recall@K",
                    x_log: true,
                    series: recall_series(runs, |m, name| {
                        surface_recall(m, name, task, surface)
                            .map_or_else(Vec::new, |r| recall_points(&r.recall))
                    }),
                }
            })
            .collect();
        out.push(Figure {
            name: format!("recall_{task}_surfaces"),
            title: format!("{task} recall@K per surface{whose}"),
            panels,
        });
    }
    out
}

/// The model's eval queries of `surface` on `task` (those averaged over).
fn surface_queries(m: &Metrics, task: &str, surface: &str) -> usize {
    surface_recall(m, "model", task, surface).map_or(0, |r| r.queries)
}

/// A retriever's figures on one task's queries of one surface.
fn surface_recall<'m>(
    m: &'m Metrics,
    retriever: &str,
    task: &str,
    surface: &str,
) -> Option<&'m SurfaceRecall> {
    let t = m.surfaces.get(retriever)?;
    if task == "conversion" {
        t.conversion.get(surface)
    } else {
        t.engagement.get(surface)
    }
}

/// Warnings for a report of several runs that were not evaluated on the same data (another
/// catalogue or other eval queries): their curves overlay, but do not compare.
fn dataset_warnings(runs: &[Run]) -> Vec<String> {
    let Some((first, rest)) = runs.split_first() else {
        return Vec::new();
    };
    let shape = |m: &Metrics| {
        (
            m.eval.corpus_pins,
            m.eval.conversion_queries,
            m.eval.engagement_queries,
        )
    };
    rest.iter()
        .filter(|run| shape(&run.metrics) != shape(&first.metrics))
        .map(|run| {
            let (a, b) = (shape(&first.metrics), shape(&run.metrics));
            format!(
                "warning: {} and {} were evaluated on different data ({} / {} pins, {} / {} conversion queries, {} / {} engagement queries): their curves do not compare",
                first.label, run.label, a.0, b.0, a.1, b.1, a.2, b.2
            )
        })
        .collect()
}

fn draw_error(e: impl std::fmt::Debug) -> anyhow::Error {
    anyhow!("cannot draw the chart: {e:?}")
}

/// Pixels of a figure: 900 x 600 for one panel, 520 x 520 each for several side by side (the
/// legend band under each included), plus a title band.
fn figure_size(fig: &Figure) -> (u32, u32) {
    let title = if fig.title.is_empty() { 0 } else { 40 };
    match fig.panels.len() {
        0 | 1 => (900, 600 + title),
        n => (520 * n as u32, 520 + title),
    }
}

/// The figure as SVG text and PNG bytes.
fn render(fig: &Figure) -> Result<(String, Vec<u8>)> {
    let (w, h) = figure_size(fig);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw_figure(&root, fig)?;
        root.present().map_err(draw_error)?;
    }
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_figure(&root, fig)?;
        root.present().map_err(draw_error)?;
    }
    Ok((svg, encode_png(&rgb, w, h)?))
}

/// An 8-bit RGB image as PNG.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        // Charts are flat colour: the best compression with per-line filters makes them small.
        encoder.set_compression(png::Compression::Best);
        encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        let mut writer = encoder.write_header().context("cannot encode PNG")?;
        writer.write_image_data(rgb).context("cannot encode PNG")?;
    }
    Ok(out)
}

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure) -> Result<()> {
    root.fill(&WHITE).map_err(draw_error)?;
    let body = if fig.title.is_empty() {
        root.clone()
    } else {
        root.titled(&fig.title, (FONT, 24)).map_err(draw_error)?
    };
    let areas = body.split_evenly((1, fig.panels.len().max(1)));
    for (area, panel) in areas.iter().zip(&fig.panels) {
        let (width, height) = area.dim_in_pixel();
        let band = legend_height(width, panel.series.len());
        let (area, legend) = area.split_vertically(height.saturating_sub(band));
        draw_legend(&legend, &panel.series)?;
        let area = &area;
        let (x, y) = ranges(panel);
        if panel.x_log {
            // Ticks at the cut-offs themselves, not at the log axis' own round numbers.
            let ks = key_points(panel);
            draw_panel(area, panel, x.log_scale().with_key_points(ks), y)?;
        } else {
            draw_panel(area, panel, x, y)?;
        }
    }
    Ok(())
}

/// The distinct x values of a panel's points, ascending ([`RECALL_KS`] when it has none).
fn key_points(panel: &Panel) -> Vec<f64> {
    let mut xs: Vec<f64> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    if xs.is_empty() {
        RECALL_KS.iter().map(|&k| k as f64).collect()
    } else {
        xs
    }
}

/// The axes' ranges: x over the points (K from 50 to 1000 when empty), y from 0 (recall) or the
/// least value (loss) to the largest, padded.
fn ranges(panel: &Panel) -> (Range<f64>, Range<f64>) {
    let points = panel.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (50.0, 1000.0, 0.0, 1.0);
    }
    if x0 == x1 {
        (x0, x1) = (x0 * 0.9 - 0.5, x1 * 1.1 + 0.5);
    }
    if panel.x_log {
        // Recall: from 0, to 1 or a little above the largest value.
        ((x0 * 0.9)..(x1 * 1.1), 0.0..(y1 * 1.1).clamp(0.05, 1.0))
    } else {
        let pad = ((y1 - y0) * 0.08).max(1e-3);
        (x0..x1, (y0 - pad)..(y1 + pad))
    }
}

fn draw_panel<DB, X>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    x: X,
    y: Range<f64>,
) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 22))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(panel.y_label)
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_error)?;
    for (i, s) in panel.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(draw_error)?;
        if s.points.len() <= 12 {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(draw_error)?;
        }
    }
    Ok(())
}

/// Height of one row of a legend band, pixels.
const LEGEND_ROW: u32 = 22;

/// Legend entries per row of a band `width` pixels wide.
fn legend_columns(width: u32) -> usize {
    (width / 170).max(1) as usize
}

/// Height of the legend band under a panel `width` pixels wide with `entries` series.
fn legend_height(width: u32, entries: usize) -> u32 {
    if entries == 0 {
        return 0;
    }
    (entries.div_ceil(legend_columns(width)) as u32) * LEGEND_ROW + 8
}

/// The legend of `series` in the band `area` under a panel, in rows: a line in the series'
/// colour, then its label. Drawn apart from the plot, it can hide no line.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, series: &[Series]) -> Result<()> {
    let (width, _) = area.dim_in_pixel();
    let columns = legend_columns(width);
    let column_width = (width as usize / columns) as i32;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let x = 16 + (i % columns) as i32 * column_width;
        let y = 4 + (i / columns) as i32 * LEGEND_ROW as i32 + LEGEND_ROW as i32 / 2;
        area.draw(&PathElement::new(
            vec![(x, y), (x + 22, y)],
            color.stroke_width(3),
        ))
        .map_err(draw_error)?;
        area.draw(&Text::new(
            s.label.as_str(),
            (x + 30, y - 8),
            (FONT, 15).into_font(),
        ))
        .map_err(draw_error)?;
    }
    Ok(())
}

fn cell(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

fn signed(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:+.1}%"))
}

/// `report.md`: the runs, their key numbers, the online lifts, and the charts.
fn summary(runs: &[Run], figures: &[Figure], warnings: &[String]) -> String {
    let mut out = String::from("# convcg report\n\n");
    for w in warnings {
        let _ = writeln!(out, "**{w}**\n");
    }
    let at100 = |m: &std::collections::BTreeMap<String, f64>| m.get("recall@100").copied();
    let _ = writeln!(
        out,
        "| run | metrics | steps | final loss | conversion recall@100 | engagement recall@100 | popularity conversion recall@100 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for run in runs {
        let m = &run.metrics;
        let _ = writeln!(
            out,
            "| {} | `{}` | {} | {} | {} | {} | {} |",
            run.label,
            run.file.display(),
            m.training.steps,
            cell(m.training.loss_curve.last().map(|p| p.loss), 4),
            cell(at100(&m.model.conversion), 4),
            cell(at100(&m.model.engagement), 4),
            cell(at100(&m.popularity.conversion), 4),
        );
    }
    let online: Vec<&Run> = runs.iter().filter(|r| r.metrics.online.is_some()).collect();
    if !online.is_empty() {
        out.push_str("\n## Simulated online metrics\n\n");
        out.push_str(
            "Each conversion eval query's top K enters the simulated auction (docs/design.md, \"Simulated serving\"); \
             expected outcomes from the marketplace's ground truth.\n\n",
        );
        let _ = writeln!(
            out,
            "| run | retriever | impressions | clicks | conversions | value | cost | conversions per 1k queries | impression-to-conversion | RoAS |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
        for run in &online {
            let Some(o) = &run.metrics.online else {
                continue;
            };
            for name in ["model", "popularity"] {
                let Some(f) = o.retrievers.get(name) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "| {} | {name} | {:.2} | {:.3} | {:.4} | {:.2} | {:.3} | {} | {} | {} |",
                    run.label,
                    f.outcome.impressions,
                    f.outcome.clicks,
                    f.outcome.conversions,
                    f.outcome.value,
                    f.outcome.cost,
                    cell(f.conversion_volume, 4),
                    f.impression_to_conversion
                        .map_or_else(|| "-".to_owned(), |x| format!("{:.4}%", 100.0 * x)),
                    cell(f.roas, 3),
                );
            }
        }
        out.push('\n');
        for run in &online {
            if let Some(lift) = run
                .metrics
                .online
                .as_ref()
                .and_then(|o| o.lift_vs_popularity.get("model"))
            {
                let _ = writeln!(
                    out,
                    "- {}: model vs popularity: {}",
                    run.label,
                    lift.paper_style()
                );
            }
        }
        if let [first, rest @ ..] = online.as_slice() {
            let model = |r: &Run| {
                r.metrics
                    .online
                    .as_ref()
                    .and_then(|o| o.retrievers.get("model"))
                    .map(|f| f.outcome)
            };
            for run in rest {
                if let (Some(a), Some(b)) = (model(first), model(run)) {
                    let _ = writeln!(
                        out,
                        "- {} vs {} (models): {}",
                        run.label,
                        first.label,
                        OnlineLift::between(&a, &b).paper_style()
                    );
                }
            }
        }
    }
    if let [first, rest @ ..] = runs
        && !rest.is_empty()
    {
        out.push_str("\n## Against the first run\n\n| run | task | recall@100 | delta vs ");
        let _ = writeln!(out, "{} |\n|---|---|---|---|", first.label);
        for run in rest {
            for task in ["conversion", "engagement"] {
                let a = at100(task_recall(&first.metrics.model, task));
                let b = at100(task_recall(&run.metrics.model, task));
                let delta = a.zip(b).map(|(a, b)| b - a);
                let _ = writeln!(
                    out,
                    "| {} | {task} | {} | {} ({}) |",
                    run.label,
                    cell(b, 4),
                    delta.map_or_else(|| "-".to_owned(), |d| format!("{d:+.4}")),
                    signed(convcg_eval::lift_percent(a, b)),
                );
            }
        }
    }
    out.push_str("\n## Charts\n");
    for fig in figures {
        let title = fig
            .panels
            .first()
            .map(|p| {
                if fig.title.is_empty() {
                    p.title.clone()
                } else {
                    fig.title.clone()
                }
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n### {title}\n\n![{title}]({name}.svg)\n\n[PNG]({name}.png)",
            name = fig.name
        );
    }
    out
}
