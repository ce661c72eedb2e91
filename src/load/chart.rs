//! `--chart out.svg`: achieved rate and p99 per second of one run, or p50/p99 against the
//! offered rate of a sweep, drawn as SVG (plotters' SVG backend needs no system fonts).

use std::path::Path;

use plotters::prelude::*;

use super::stats::Summary;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct ChartError {
    pub path: String,
    pub message: String,
}

type Series = Vec<(f64, f64)>;

/// One run: transactions answered per second, and p99 per second, over time.
pub fn over_time(summary: &Summary, path: &Path) -> Result<(), ChartError> {
    let rate: Series = summary
        .per_second
        .iter()
        .map(|s| (s.t, s.ok as f64))
        .collect();
    let p99: Series = summary.per_second.iter().map(|s| (s.t, s.p99_ms)).collect();
    let title = format!(
        "sipedge load {} {} → {}",
        summary.scenario, summary.transport, summary.target
    );
    two_panels(
        path,
        &title,
        ("achieved rate (ok/s)", vec![("ok/s", rate, BLUE)]),
        ("p99 latency (ms)", vec![("p99", p99, RED)]),
        "time (s)",
    )
}

/// A sweep: p50 and p99 against the offered rate, and achieved against offered.
pub fn sweep(steps: &[Summary], path: &Path) -> Result<(), ChartError> {
    let achieved: Series = steps.iter().map(|s| (s.rate, s.achieved_rate)).collect();
    let offered: Series = steps.iter().map(|s| (s.rate, s.rate)).collect();
    // A step where nothing was answered has no latency to draw.
    let p50: Series = steps
        .iter()
        .filter_map(|s| Some((s.rate, s.latency_ms?.p50)))
        .collect();
    let p99: Series = steps
        .iter()
        .filter_map(|s| Some((s.rate, s.latency_ms?.p99)))
        .collect();
    let title = match steps.first() {
        Some(s) => format!(
            "sipedge load sweep {} {} → {}",
            s.scenario, s.transport, s.target
        ),
        None => "sipedge load sweep".into(),
    };
    two_panels(
        path,
        &title,
        (
            "achieved vs offered (/s)",
            vec![("achieved", achieved, BLUE), ("offered", offered, BLACK)],
        ),
        ("latency (ms)", vec![("p50", p50, GREEN), ("p99", p99, RED)]),
        "offered rate (/s)",
    )
}

/// One sample of a soak run (`benches/soak.sh`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoakSample {
    /// Seconds since the start.
    pub t: f64,
    pub rss_mb: f64,
    pub open_files: f64,
    pub log_lines_per_s: f64,
}

/// A soak run: RSS over time above, open files and log lines per second below.
pub fn soak(samples: &[SoakSample], title: &str, path: &Path) -> Result<(), ChartError> {
    let series =
        |f: fn(&SoakSample) -> f64| -> Series { samples.iter().map(|s| (s.t, f(s))).collect() };
    two_panels(
        path,
        title,
        ("RSS (MB)", vec![("RSS", series(|s| s.rss_mb), BLUE)]),
        (
            "open files, log lines/s",
            vec![
                ("open files", series(|s| s.open_files), BLACK),
                ("log lines/s", series(|s| s.log_lines_per_s), RED),
            ],
        ),
        "time (s)",
    )
}

fn two_panels(
    path: &Path,
    title: &str,
    top: (&str, Vec<(&str, Series, RGBColor)>),
    bottom: (&str, Vec<(&str, Series, RGBColor)>),
    x_label: &str,
) -> Result<(), ChartError> {
    let err = |e: &dyn std::fmt::Display| ChartError {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let root = SVGBackend::new(path, (900, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (upper, lower) = root.split_vertically(330);
    for (area, (label, lines)) in [(upper, top), (lower, bottom)] {
        let x_max = lines
            .iter()
            .flat_map(|(_, s, _)| s.iter().map(|p| p.0))
            .fold(1.0_f64, f64::max);
        let y_max = lines
            .iter()
            .flat_map(|(_, s, _)| s.iter().map(|p| p.1))
            .fold(0.0_f64, f64::max)
            .max(1e-3)
            * 1.1;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(label)
            .draw()
            .map_err(|e| err(&e))?;
        for (name, series, color) in lines {
            chart
                .draw_series(LineSeries::new(series, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
