//! Sweep results: trials ranked by the target metric, as a printed table, `results.csv` and
//! `results.png` (the target against each swept parameter).

use std::path::Path;
use std::sync::OnceLock;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use super::journal::{Trial, TrialStatus};
use super::space::Domain;
use super::{Sweep, SweepError, SweepPlan};

/// Font files tried in order for the plot's labels; without one the plot has no text.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Trials in rank order: finished trials by the target (best first), then pruned trials by
/// their best report, then the rest by id.
pub fn ranked(plan: &SweepPlan, trials: &[Trial]) -> Vec<Trial> {
    let direction = plan.config.direction;
    let group = |trial: &Trial| match (trial.status, trial.value) {
        (TrialStatus::Finished, Some(_)) => 0,
        (TrialStatus::Pruned, Some(_)) => 1,
        _ => 2,
    };
    let mut ranked = trials.to_vec();
    ranked.sort_by(|a, b| {
        group(a).cmp(&group(b)).then_with(|| match (a.value, b.value) {
            (Some(x), Some(y)) if group(a) < 2 => direction.loss(x).total_cmp(&direction.loss(y)),
            _ => a.id.cmp(&b.id),
        })
    });
    ranked
}

/// The value text of each swept key in a trial, in the space's order.
fn values(trial: &Trial) -> Vec<String> {
    trial
        .overrides
        .iter()
        .map(|text| text.split_once('=').map_or(text.clone(), |(_, value)| value.to_owned()))
        .collect()
}

/// The ranked table as text, one line per trial.
pub fn table(plan: &SweepPlan, trials: &[Trial]) -> String {
    let keys: Vec<&str> = plan.config.space.dimensions.iter().map(|d| d.key.as_str()).collect();
    let metric = plan.metric();
    let mut rows = vec![{
        let mut header = vec!["rank".to_owned(), "trial".into(), "status".into(), metric.into()];
        header.extend(keys.iter().map(|key| (*key).to_owned()));
        header.push("run".into());
        header
    }];
    for (rank, trial) in ranked(plan, trials).iter().enumerate() {
        let mut row = vec![
            (rank + 1).to_string(),
            trial.id.to_string(),
            trial.status.as_str().to_owned(),
            trial.value.map_or_else(|| "-".to_owned(), |value| format!("{value:.6}")),
        ];
        row.extend(values(trial));
        row.push(trial.run_id.clone().unwrap_or_else(|| "-".into()));
        rows.push(row);
    }
    let columns = rows[0].len();
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter().map(|row| row.get(column).map_or(0, String::len)).max().unwrap_or(0)
        })
        .collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The ranked trials as CSV: rank, trial, status, target, each swept key, run id, folders,
/// attempts and error.
pub fn csv(plan: &SweepPlan, trials: &[Trial]) -> String {
    let mut header = vec!["rank", "trial", "status", plan.metric()];
    header.extend(plan.config.space.dimensions.iter().map(|d| d.key.as_str()));
    header.extend(["run_id", "trial_dir", "run_dir", "attempts", "error"]);
    let mut text = header.iter().map(|field| csv_field(field)).collect::<Vec<_>>().join(",") + "\n";
    for (rank, trial) in ranked(plan, trials).iter().enumerate() {
        let mut row = vec![
            (rank + 1).to_string(),
            trial.id.to_string(),
            trial.status.as_str().to_owned(),
            trial.value.map(|value| value.to_string()).unwrap_or_default(),
        ];
        row.extend(values(trial));
        row.push(trial.run_id.clone().unwrap_or_default());
        row.push(trial.dir.display().to_string());
        row.push(trial.run_dir.as_ref().map(|dir| dir.display().to_string()).unwrap_or_default());
        row.push(trial.attempts.to_string());
        row.push(trial.error.clone().unwrap_or_default());
        text.push_str(&row.iter().map(|field| csv_field(field)).collect::<Vec<_>>().join(","));
        text.push('\n');
    }
    text
}

fn text_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        FONT_PATHS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters keeps `&'static` font data, so the bytes are leaked, once per process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
        })
    })
}

fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if high > low { (high - low) * 0.08 } else { low.abs().max(1.0) * 0.1 };
    (low - pad, high + pad)
}

/// Draws the target of every trial with a value against each swept parameter, one panel per
/// parameter side by side, and encodes it as PNG. A logarithmic domain is drawn in `log10`.
///
/// # Errors
///
/// Returns an error when drawing or encoding fails.
pub fn plot(plan: &SweepPlan, trials: &[Trial]) -> Result<Vec<u8>, String> {
    let dimensions = &plan.config.space.dimensions;
    let panels = dimensions.len().max(1);
    let (width, height) = (360 * panels as u32, 340u32);
    let text = text_available();
    let scored: Vec<&Trial> = trials.iter().filter(|trial| trial.value.is_some()).collect();
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|error| error.to_string())?;
        let areas = root.split_evenly((1, panels));
        for (index, area) in areas.iter().enumerate() {
            let Some(dimension) = dimensions.get(index) else { continue };
            let log = matches!(dimension.domain, Domain::Float { log: true, .. });
            let x_of = |trial: &Trial| {
                let value =
                    dimension.domain.numeric(trial.point.get(index).copied().unwrap_or(0.0));
                if log { value.log10() } else { value }
            };
            let points: Vec<(f64, f64, bool)> = scored
                .iter()
                .map(|trial| {
                    (x_of(trial), trial.value.unwrap_or(0.0), trial.status == TrialStatus::Pruned)
                })
                .collect();
            let x_range = padded(points.iter().map(|point| point.0));
            let y_range = padded(points.iter().map(|point| point.1));
            let label_area = if text { 40 } else { 0 };
            let mut builder = ChartBuilder::on(area);
            builder.margin(12).x_label_area_size(label_area).y_label_area_size(label_area + 20);
            if text {
                let title =
                    if log { format!("log10({})", dimension.key) } else { dimension.key.clone() };
                builder.caption(title, ("sans-serif", 16));
            }
            let mut chart = builder
                .build_cartesian_2d(x_range.0..x_range.1, y_range.0..y_range.1)
                .map_err(|error| error.to_string())?;
            if text {
                chart
                    .configure_mesh()
                    .y_desc(plan.metric())
                    .x_labels(5)
                    .y_labels(5)
                    .draw()
                    .map_err(|error| error.to_string())?;
            }
            chart
                .draw_series(points.iter().map(|(x, y, pruned)| {
                    let color =
                        if *pruned { RGBColor(255, 127, 14) } else { RGBColor(31, 119, 180) };
                    Circle::new((*x, *y), 5, color.filled())
                }))
                .map_err(|error| error.to_string())?;
        }
        root.present().map_err(|error| error.to_string())?;
    }
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&pixels, width, height, image::ColorType::Rgb8)
        .map_err(|error| error.to_string())?;
    Ok(png)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), SweepError> {
    std::fs::write(path, bytes).map_err(|error| super::io_error(path, &error))
}

/// Writes `results.csv` and `results.png` into the sweep folder.
///
/// # Errors
///
/// Fails when the journal cannot be read or a file cannot be written; a plot that cannot be
/// drawn is only logged.
pub fn write_results(sweep: &Sweep) -> Result<(), SweepError> {
    let trials = sweep.journal.trials()?;
    write(&sweep.dir.join("results.csv"), csv(&sweep.plan, &trials).as_bytes())?;
    match plot(&sweep.plan, &trials) {
        Ok(png) => write(&sweep.dir.join("results.png"), &png)?,
        Err(message) => {
            tracing::warn!("cannot draw {}: {message}", sweep.dir.join("results.png").display())
        }
    }
    Ok(())
}
