//! Rendering a labelled 2-D scatter plot into PNG bytes with plotters.

use std::sync::OnceLock;

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use pretext_plugin_api::Result;

/// Font files tried in order, the first one for Debian and Ubuntu.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Family name under which the font is registered, the one plotters' default text style uses.
const FONT_FAMILY: &str = "sans-serif";

/// Legends with more entries than this are left out, because they would cover the plot.
const MAX_LEGEND_ENTRIES: usize = 20;

/// The Tableau 10 palette, used in turn for the groups.
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

/// Points to draw, with a group index into `group_names` for each.
#[derive(Debug, Clone)]
pub struct Scatter<'a> {
    pub points: &'a [[f64; 2]],
    /// One group per point; `None` draws every point in the first colour, without a legend.
    pub groups: Option<&'a [usize]>,
    pub group_names: &'a [String],
    pub axis_names: &'a [String; 2],
}

/// Registers the first readable font of [`FONT_PATHS`] with plotters, once per process, and
/// returns whether text can be drawn.
pub fn text_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        FONT_PATHS.iter().any(|path| {
            let Ok(bytes) = std::fs::read(path) else {
                return false;
            };
            // plotters requires `&'static` font data, so the bytes are leaked. `get_or_init` runs
            // this closure once per process, so each path leaks at most once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            register_font(FONT_FAMILY, FontStyle::Normal, bytes).is_ok()
        })
    })
}

/// Draws `scatter` on a white `width` x `height` canvas and encodes it as PNG. With `text`
/// false, axis labels, tick labels and the legend are left out.
///
/// # Errors
///
/// Fails when plotters cannot draw (as when `text` is true but no font is registered) or the
/// PNG encoder fails.
pub fn render_png(scatter: &Scatter, width: u32, height: u32, text: bool) -> Result<Vec<u8>> {
    let mut pixels = vec![255u8; width as usize * height as usize * 3];
    draw(&mut pixels, scatter, (width, height), text)?;

    let mut png = Vec::new();
    PngEncoder::new(&mut png).write_image(&pixels, width, height, image::ColorType::Rgb8)?;
    Ok(png)
}

fn draw(pixels: &mut [u8], scatter: &Scatter, size: (u32, u32), text: bool) -> Result<()> {
    let root = BitMapBackend::with_buffer(pixels, size).into_drawing_area();
    root.fill(&WHITE)?;

    let (x_range, y_range) = axis_ranges(scatter.points);
    let label_area = if text { (45, 60) } else { (0, 0) };
    let mut chart = ChartBuilder::on(&root)
        .margin(20)
        .x_label_area_size(label_area.0)
        .y_label_area_size(label_area.1)
        .build_cartesian_2d(x_range, y_range)?;

    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(RGBColor(235, 235, 235));
    if text {
        mesh.x_desc(scatter.axis_names[0].as_str()).y_desc(scatter.axis_names[1].as_str());
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw()?;

    let group_count = scatter.group_names.len().max(1);
    for group in 0..group_count {
        let color = PALETTE[group % PALETTE.len()];
        let members = scatter
            .points
            .iter()
            .enumerate()
            .filter(|(index, _)| scatter.groups.is_none_or(|groups| groups[*index] == group));
        let series = chart.draw_series(
            members.map(|(_, point)| Circle::new((point[0], point[1]), 3, color.mix(0.8).filled())),
        )?;
        if let Some(name) = scatter.group_names.get(group) {
            series
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, color.filled()));
        }
    }

    let legend = scatter.groups.is_some() && scatter.group_names.len() <= MAX_LEGEND_ENTRIES;
    if text && legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// Returns the data ranges widened by 5% on each side. An empty span becomes one unit wide.
fn axis_ranges(points: &[[f64; 2]]) -> (std::ops::Range<f64>, std::ops::Range<f64>) {
    let range = |axis: usize| {
        let (low, high) =
            points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(low, high), point| {
                (low.min(point[axis]), high.max(point[axis]))
            });
        if !(low.is_finite() && high.is_finite()) {
            return -1.0..1.0;
        }
        let span = high - low;
        let pad = if span > 0.0 { 0.05 * span } else { 0.5 };
        (low - pad)..(high + pad)
    };
    (range(0), range(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];

    fn scatter_of<'a>(
        points: &'a [[f64; 2]],
        groups: &'a [usize],
        names: &'a [String],
        axes: &'a [String; 2],
    ) -> Scatter<'a> {
        Scatter { points, groups: Some(groups), group_names: names, axis_names: axes }
    }

    #[test]
    fn render_without_text_gives_png() {
        let points = [[0.0, 0.0], [1.0, 2.0], [2.0, 1.0]];
        let names = ["a".to_owned(), "b".to_owned()];
        let axes = ["x".to_owned(), "y".to_owned()];

        let png =
            render_png(&scatter_of(&points, &[0, 1, 1], &names, &axes), 320, 240, false).unwrap();

        assert_eq!(png[..8], PNG_SIGNATURE);
        let decoded = image::load_from_memory(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 240));
    }

    #[test]
    fn render_with_text_when_font_exists() {
        if !text_available() {
            eprintln!("skipped: none of {FONT_PATHS:?} could be registered");
            return;
        }
        let points = [[0.0, 0.0], [1.0, 2.0]];
        let names = ["zero".to_owned(), "one".to_owned()];
        let axes = ["PC1".to_owned(), "PC2".to_owned()];
        let scatter = scatter_of(&points, &[0, 1], &names, &axes);

        let with_text = render_png(&scatter, 400, 300, true).unwrap();
        let without_text = render_png(&scatter, 400, 300, false).unwrap();

        assert_eq!(with_text[..8], PNG_SIGNATURE);
        assert_ne!(with_text, without_text);
    }

    #[test]
    fn render_handles_identical_points() {
        let points = [[3.0, 3.0], [3.0, 3.0]];
        let axes = ["x".to_owned(), "y".to_owned()];
        let scatter =
            Scatter { points: &points, groups: None, group_names: &[], axis_names: &axes };

        let png = render_png(&scatter, 200, 200, false).unwrap();

        assert_eq!(png[..8], PNG_SIGNATURE);
    }

    #[test]
    fn axis_ranges_pad_the_data() {
        let (x, y) = axis_ranges(&[[0.0, 5.0], [10.0, 5.0]]);

        assert_eq!(x, -0.5..10.5);
        assert_eq!(y, 4.5..5.5);
    }
}
