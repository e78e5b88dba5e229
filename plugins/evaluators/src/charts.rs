//! Rendering a confusion matrix heatmap and a label-efficiency curve into PNG bytes.

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use pretext_plugin_api::{Result, ensure};

/// Largest number of classes whose names are written along the axes of a confusion matrix.
const MAX_NAMED_CLASSES: usize = 30;

/// Encodes an RGB buffer of `width x height` pixels as PNG.
fn encode_png(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png).write_image(pixels, width, height, image::ColorType::Rgb8)?;
    Ok(png)
}

/// Draws a confusion matrix (rows true classes, columns predicted) as a heatmap in which each
/// cell's shade is its share of the row. With `text`, cells show their counts and the axes the
/// class names.
///
/// # Errors
///
/// Fails when `counts` is not square with one row per name, or when drawing fails.
pub fn confusion_matrix_png(
    counts: &[Vec<usize>],
    names: &[String],
    text: bool,
) -> Result<Vec<u8>> {
    let classes = counts.len();
    ensure!(classes > 0, "a confusion matrix needs at least one class");
    ensure!(
        counts.iter().all(|row| row.len() == classes) && names.len() == classes,
        "a confusion matrix of {classes} rows needs {classes} columns and class names"
    );

    let side = (80 + 40 * classes as u32).clamp(320, 1600);
    let (width, height) = (side + 120, side + 80);
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let label_area = if text { 100 } else { 0 };
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .x_label_area_size(label_area)
            .y_label_area_size(label_area)
            // A segmented range `a..b` has a segment for each of `a..=b`, so one fewer is asked for.
            .build_cartesian_2d(
                (0..classes - 1).into_segmented(),
                (0..classes - 1).into_segmented(),
            )?;

        let named = text && classes <= MAX_NAMED_CLASSES;
        let name_of = |segment: &SegmentValue<usize>| match segment {
            SegmentValue::CenterOf(index) => names.get(*index).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        // Row 0 is drawn at the top, so the y axis names the classes in reverse.
        let reversed_name_of = |segment: &SegmentValue<usize>| match segment {
            SegmentValue::CenterOf(index) if *index < classes => {
                names.get(classes - 1 - index).cloned().unwrap_or_default()
            }
            _ => String::new(),
        };
        // NOTE: plotters 0.3.7 overflows computing the key points of an integer axis with no
        // labels, so the mesh is drawn only when it carries the class names.
        if named {
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc("predicted")
                .y_desc("true")
                .x_labels(classes)
                .y_labels(classes)
                .x_label_formatter(&name_of)
                .y_label_formatter(&reversed_name_of)
                .draw()?;
        }

        for (row, cells) in counts.iter().enumerate() {
            let total = cells.iter().sum::<usize>().max(1) as f64;
            for (column, &count) in cells.iter().enumerate() {
                let share = count as f64 / total;
                let shade = (255.0 * (1.0 - share)) as u8;
                let colour = RGBColor(shade, shade, 255);
                // Row 0 is drawn at the top, so the y coordinate counts down.
                let y = classes - 1 - row;
                let corners = [
                    (SegmentValue::Exact(column), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(column + 1), SegmentValue::Exact(y + 1)),
                ];
                chart.draw_series(std::iter::once(Rectangle::new(corners, colour.filled())))?;
                if text && classes <= MAX_NAMED_CLASSES {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    let style = TextStyle::from(("sans-serif", 14).into_font())
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    let anchor = (SegmentValue::CenterOf(column), SegmentValue::CenterOf(y));
                    chart.draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        anchor,
                        style,
                    )))?;
                }
            }
        }
        root.present()?;
    }
    encode_png(&pixels, width, height)
}

/// Draws probe accuracy against the fraction of train labels used, on a logarithmic x axis.
///
/// # Errors
///
/// Fails when `points` is empty, a fraction is not positive, or drawing fails.
pub fn label_efficiency_png(points: &[(f64, f64)], text: bool) -> Result<Vec<u8>> {
    ensure!(!points.is_empty(), "a label-efficiency curve needs at least one point");
    ensure!(
        points.iter().all(|(fraction, _)| *fraction > 0.0),
        "label fractions must be positive to be drawn on a log axis"
    );

    let (width, height) = (640u32, 480u32);
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let smallest = points.iter().map(|point| point.0).fold(f64::INFINITY, f64::min);
        let largest = points.iter().map(|point| point.0).fold(0.0, f64::max);
        let x_range = (smallest / 1.5)..(largest * 1.5);
        let label_area = if text { (45, 60) } else { (0, 0) };
        let mut chart = ChartBuilder::on(&root)
            .margin(20)
            .x_label_area_size(label_area.0)
            .y_label_area_size(label_area.1)
            .build_cartesian_2d(x_range.log_scale(), 0.0..1.0)?;

        let mut mesh = chart.configure_mesh();
        mesh.light_line_style(RGBColor(235, 235, 235));
        if text {
            mesh.x_desc("fraction of train labels").y_desc("probe accuracy");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;

        let mut sorted = points.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        let colour = RGBColor(31, 119, 180);
        chart.draw_series(LineSeries::new(sorted.iter().copied(), colour.stroke_width(2)))?;
        chart.draw_series(sorted.iter().map(|&point| Circle::new(point, 4, colour.filled())))?;
        root.present()?;
    }
    encode_png(&pixels, width, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::text_available;

    fn decoded_size(png: &[u8]) -> (u32, u32) {
        let image = image::load_from_memory(png).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn confusion_matrix_renders_png() {
        let counts = vec![vec![5, 1], vec![0, 4]];
        let names = vec!["a".to_owned(), "b".to_owned()];

        for text in [false, text_available()] {
            let png = confusion_matrix_png(&counts, &names, text).unwrap();

            assert_eq!(decoded_size(&png), (440, 400));
        }
    }

    #[test]
    fn confusion_matrix_renders_single_class() {
        let png = confusion_matrix_png(&[vec![3]], &["only".to_owned()], text_available()).unwrap();

        assert_eq!(decoded_size(&png), (440, 400));
    }

    #[test]
    fn confusion_matrix_rejects_ragged_counts() {
        let error = confusion_matrix_png(&[vec![1, 2], vec![3]], &["a".into(), "b".into()], false)
            .unwrap_err();

        assert_eq!(error.message(), "a confusion matrix of 2 rows needs 2 columns and class names");
    }

    #[test]
    fn label_efficiency_renders_png() {
        let points = [(0.01, 0.5), (0.1, 0.8), (1.0, 0.95)];

        let png = label_efficiency_png(&points, text_available()).unwrap();

        assert_eq!(decoded_size(&png), (640, 480));
    }
}
