//! The `image_grid` evaluator: PNG grids of test inputs beside their reconstructions, and of
//! generated samples, for objectives that provide them.
//!
//! Samples must be images: a shape of `[C, H, W]` with 1 or 3 channels, `[H, W]`, or a flat
//! vector whose length is a square (drawn as a square grey image). Every grid maps values to grey
//! levels with the range of the test inputs shown, so that inputs, reconstructions and samples
//! share one scale. Values outside that range are clipped.

use image::ImageEncoder;
use image::codecs::png::PngEncoder;
use pretext_plugin_api::tch::{self, Device, Kind, Tensor};
use pretext_plugin_api::{
    Artifact, BuildContext, DatasetInfo, Description, EvalContext, EvalReport, Evaluator,
    EvaluatorPlugin, InputKind, Param, Params, Result, Split, bail, ensure,
};

/// Width of the grey border between cells, in output pixels.
const BORDER: usize = 2;

/// Grey level of the border.
const BORDER_GREY: u8 = 128;

/// Side, in output pixels, that the automatic scale enlarges each image to at least.
const AUTO_SIDE: usize = 64;

/// Number of images per row of a grid, at most.
const COLUMNS: usize = 8;

/// Channels, height and width of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// Derives the image shape of a dataset's samples.
    ///
    /// # Errors
    ///
    /// Fails when the samples are tokens or their shape is not an image, as described in the
    /// module documentation.
    pub fn of(info: &DatasetInfo) -> Result<Self> {
        ensure!(
            info.input_kind == InputKind::Features,
            "the dataset's inputs are tokens; image_grid draws float images"
        );
        let shape: Vec<usize> = info.sample_shape.iter().map(|&size| size as usize).collect();
        let image = match shape.as_slice() {
            &[channels @ (1 | 3), height, width] => Self { channels, height, width },
            &[height, width] => Self { channels: 1, height, width },
            &[length] if square_side(length).is_some() => {
                let side = square_side(length).unwrap_or(1);
                Self { channels: 1, height: side, width: side }
            }
            other => bail!(
                "image_grid needs image samples ([1 or 3, H, W], [H, W] or a square number of \
                 values), found shape {other:?}"
            ),
        };
        ensure!(image.height > 0 && image.width > 0, "image_grid needs non-empty images");
        Ok(image)
    }

    fn numel(self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Returns the side of a square with `length` cells, if `length` is a positive square.
fn square_side(length: usize) -> Option<usize> {
    let side = (length as f64).sqrt().round() as usize;
    (length > 0 && side * side == length).then_some(side)
}

/// Draws grids of inputs, reconstructions and samples.
pub struct ImageGrid {
    count: usize,
    /// Output pixels per image pixel; 0 picks one so that each image is at least 64 pixels.
    scale: usize,
}

impl EvaluatorPlugin for ImageGrid {
    fn describe() -> Description {
        Description::new(
            "image_grid",
            env!("CARGO_PKG_VERSION"),
            "reconstructions.png (test inputs above their reconstructions) and samples.png",
        )
        .param(
            Param::int("count", 16, "number of test inputs and of samples drawn").range(1.0, 256.0),
        )
        .param(
            Param::int(
                "scale",
                0,
                "output pixels per image pixel; 0 enlarges each image to at least 64 pixels",
            )
            .range(0.0, 64.0),
        )
    }

    fn create(params: &Params, _context: &BuildContext) -> Result<Self> {
        let count = params.int("count")?;
        let scale = params.int("scale")?;
        ensure!((1..=256).contains(&count), "count must be between 1 and 256, found {count}");
        ensure!((0..=64).contains(&scale), "scale must be between 0 and 64, found {scale}");
        Ok(Self { count: count as usize, scale: scale as usize })
    }
}

impl Evaluator for ImageGrid {
    fn evaluate(&mut self, context: &dyn EvalContext) -> Result<EvalReport> {
        let info = context.dataset();
        let shape = ImageShape::of(&info)?;
        ensure!(info.test_len > 0, "the test split is empty; image_grid needs test inputs");
        let scale = match self.scale {
            0 => AUTO_SIDE.div_ceil(shape.height.max(shape.width)).max(1),
            scale => scale,
        };

        let _no_grad = tch::no_grad_guard();
        let indices = evenly_spaced(info.test_len, self.count);
        let inputs = context.inputs(Split::Test, &indices)?.inputs;
        let input_values = to_values(&inputs, indices.len(), shape)?;
        let range = value_range(&input_values);

        let mut artifacts = Vec::new();
        let device_inputs = inputs.f_to_device(context.device())?;
        if let Some(outputs) = context.reconstruct(&device_inputs)? {
            let output_values = to_values(&outputs, indices.len(), shape)?;
            let grid = Grid { shape, scale, range };
            let bytes = grid.render_pairs(&input_values, &output_values, indices.len())?;
            artifacts.push(Artifact { path: "reconstructions.png".to_owned(), bytes });
        }
        if let Some(samples) = context.sample(self.count as i64)? {
            let rows = samples.size().first().copied().unwrap_or(0) as usize;
            let values = to_values(&samples, rows, shape)?;
            let bytes = Grid { shape, scale, range }.render(&values, rows)?;
            artifacts.push(Artifact { path: "samples.png".to_owned(), bytes });
        }
        ensure!(
            !artifacts.is_empty(),
            "the objective provides neither reconstructions nor samples; image_grid needs one \
             with a decoder (such as `autoencoder` or `vae`) or a generator (such as `gan`)"
        );
        Ok(EvalReport { metrics: Vec::new(), artifacts })
    }
}

/// Returns `min(len, limit)` indices spread evenly over `0..len`.
fn evenly_spaced(len: usize, limit: usize) -> Vec<i64> {
    let count = len.min(limit);
    (0..count).map(|i| (i as u128 * len as u128 / count as u128) as i64).collect()
}

/// Copies `rows` images out of `tensor` as float32 values, checking the number of values.
fn to_values(tensor: &Tensor, rows: usize, shape: ImageShape) -> Result<Vec<f32>> {
    let size = tensor.size();
    ensure!(
        size.first() == Some(&(rows as i64)) && tensor.numel() == rows * shape.numel(),
        "image_grid expected {rows} images of {} values, found a tensor of shape {size:?}",
        shape.numel()
    );
    let flat = tensor.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_flatten(0, -1)?;
    Ok(Vec::<f32>::try_from(&flat)?)
}

/// Returns the finite minimum and maximum of `values`, widened to a unit span when they are
/// equal or missing.
fn value_range(values: &[f32]) -> (f32, f32) {
    let finite = values.iter().copied().filter(|value| value.is_finite());
    let (low, high) =
        finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(low, high), v| (low.min(v), high.max(v)));
    if !(low.is_finite() && high.is_finite()) || high <= low {
        let centre = if low.is_finite() { low } else { 0.0 };
        return (centre - 0.5, centre + 0.5);
    }
    (low, high)
}

/// Layout of a grid: the image shape, the scale and the value range mapped to black..white.
#[derive(Debug, Clone, Copy)]
struct Grid {
    shape: ImageShape,
    scale: usize,
    range: (f32, f32),
}

impl Grid {
    /// Draws `count` images in rows of up to [`COLUMNS`].
    fn render(&self, values: &[f32], count: usize) -> Result<Vec<u8>> {
        let columns = count.clamp(1, COLUMNS);
        let rows = count.div_ceil(columns).max(1);
        let mut canvas = Canvas::new(self.cell_size(), columns, rows);
        for image in 0..count {
            self.draw(&mut canvas, values, image, (image / columns, image % columns));
        }
        canvas.encode()
    }

    /// Draws `count` pairs: each row of inputs followed by a row of their reconstructions.
    fn render_pairs(&self, inputs: &[f32], outputs: &[f32], count: usize) -> Result<Vec<u8>> {
        let columns = count.clamp(1, COLUMNS);
        let rows = 2 * count.div_ceil(columns).max(1);
        let mut canvas = Canvas::new(self.cell_size(), columns, rows);
        for image in 0..count {
            let (band, column) = (image / columns, image % columns);
            self.draw(&mut canvas, inputs, image, (2 * band, column));
            self.draw(&mut canvas, outputs, image, (2 * band + 1, column));
        }
        canvas.encode()
    }

    fn cell_size(&self) -> (usize, usize) {
        (self.shape.width * self.scale, self.shape.height * self.scale)
    }

    /// Draws image `image` of `values` into the cell at (row, column).
    fn draw(&self, canvas: &mut Canvas, values: &[f32], image: usize, cell: (usize, usize)) {
        let ImageShape { channels, height, width } = self.shape;
        let pixels = &values[image * self.shape.numel()..(image + 1) * self.shape.numel()];
        let (low, high) = self.range;
        for y in 0..height * self.scale {
            for x in 0..width * self.scale {
                let (row, column) = (y / self.scale, x / self.scale);
                let mut colour = [0u8; 3];
                for (channel, target) in colour.iter_mut().enumerate() {
                    let source = if channels == 3 { channel } else { 0 };
                    let value = pixels[(source * height + row) * width + column];
                    let level = ((value - low) / (high - low)).clamp(0.0, 1.0);
                    // NaN clamps to NaN, which `as u8` turns into 0 (black).
                    *target = (level * 255.0).round() as u8;
                }
                canvas.put(cell, (x, y), colour);
            }
        }
    }
}

/// An RGB pixel buffer laid out as cells separated by borders.
struct Canvas {
    pixels: Vec<u8>,
    width: usize,
    height: usize,
    cell: (usize, usize),
}

impl Canvas {
    fn new(cell: (usize, usize), columns: usize, rows: usize) -> Self {
        let width = columns * (cell.0 + BORDER) + BORDER;
        let height = rows * (cell.1 + BORDER) + BORDER;
        Self { pixels: vec![BORDER_GREY; width * height * 3], width, height, cell }
    }

    fn put(&mut self, cell: (usize, usize), offset: (usize, usize), colour: [u8; 3]) {
        let x = BORDER + cell.1 * (self.cell.0 + BORDER) + offset.0;
        let y = BORDER + cell.0 * (self.cell.1 + BORDER) + offset.1;
        let start = (y * self.width + x) * 3;
        self.pixels[start..start + 3].copy_from_slice(&colour);
    }

    fn encode(&self) -> Result<Vec<u8>> {
        let mut png = Vec::new();
        PngEncoder::new(&mut png).write_image(
            &self.pixels,
            self.width as u32,
            self.height as u32,
            image::ColorType::Rgb8,
        )?;
        Ok(png)
    }
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::ParamValue;

    use super::*;
    use crate::testing::FakeContext;

    fn grid(count: i64, scale: i64) -> ImageGrid {
        let params = Params::new(vec![
            ("count".into(), ParamValue::Int(count)),
            ("scale".into(), ParamValue::Int(scale)),
        ]);
        let context = BuildContext { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
        ImageGrid::create(&params, &context).unwrap()
    }

    /// Ten flat 4 x 4 images; image `i` has value `i / 10` everywhere.
    fn context() -> FakeContext {
        let rows: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64 / 10.0; 16]).collect();
        let labels = vec![0; 10];
        FakeContext::labelled(&rows, &labels, &rows, &labels)
    }

    fn info_with_shape(shape: &[i64]) -> DatasetInfo {
        let mut info = context().dataset();
        info.sample_shape = shape.to_vec();
        info
    }

    #[test]
    fn shapes_that_are_images() {
        let image = |channels, height, width| ImageShape { channels, height, width };
        let cases = [
            (vec![1, 8, 8], image(1, 8, 8)),
            (vec![3, 4, 5], image(3, 4, 5)),
            (vec![6, 7], image(1, 6, 7)),
            (vec![64], image(1, 8, 8)),
        ];
        for (shape, expected) in cases {
            assert_eq!(ImageShape::of(&info_with_shape(&shape)).unwrap(), expected, "{shape:?}");
        }
    }

    #[test]
    fn shapes_that_are_not_images() {
        for shape in [&[10][..], &[2, 4, 4], &[2, 3, 4, 5]] {
            assert!(ImageShape::of(&info_with_shape(shape)).is_err(), "{shape:?}");
        }
    }

    #[test]
    fn reconstructions_grid_has_input_and_output_rows() {
        let mut context = context();
        context.decoder = Some(Box::new(|inputs: &Tensor| inputs.zeros_like()));

        let report = grid(4, 2).evaluate(&context).unwrap();

        assert_eq!(report.artifacts.len(), 1);
        assert_eq!(report.artifacts[0].path, "reconstructions.png");
        let image = image::load_from_memory(&report.artifacts[0].bytes).unwrap().to_rgb8();
        // Four 8 x 8 cells in a row, two rows, with 2-pixel borders.
        assert_eq!((image.width(), image.height()), (4 * 10 + 2, 2 * 10 + 2));
        // The inputs drawn are images 0, 2, 5 and 7. The last, 0.7 in a range of 0..0.7, is
        // white, and its reconstruction, 0, is black.
        assert_eq!(image.get_pixel(3 * 10 + 3, 3).0, [255, 255, 255]);
        assert_eq!(image.get_pixel(3 * 10 + 3, 13).0, [0, 0, 0]);
        assert_eq!(image.get_pixel(0, 0).0, [BORDER_GREY; 3]);
    }

    #[test]
    fn image_grid_needs_reconstructions_or_samples() {
        let error = grid(4, 0).evaluate(&context()).err().unwrap();

        assert!(error.message().starts_with("the objective provides neither"), "{error}");
    }

    #[test]
    fn image_grid_rejects_wrong_reconstruction_size() {
        let mut context = context();
        context.decoder = Some(Box::new(|inputs: &Tensor| inputs.narrow(1, 0, 8)));

        let error = grid(4, 1).evaluate(&context).err().unwrap();

        assert_eq!(
            error.message(),
            "image_grid expected 4 images of 16 values, found a tensor of shape [4, 8]"
        );
    }

    #[test]
    fn sample_grid_wraps_rows() {
        let shape = ImageShape { channels: 3, height: 1, width: 1 };
        let values: Vec<f32> = (0..10).flat_map(|i| [i as f32 / 9.0, 0.0, 1.0]).collect();

        let png = Grid { shape, scale: 3, range: (0.0, 1.0) }.render(&values, 10).unwrap();

        let image = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!((image.width(), image.height()), (8 * 5 + 2, 2 * 5 + 2));
        assert_eq!(image.get_pixel(3, 3).0, [0, 0, 255]);
        assert_eq!(image.get_pixel(5 + 3, 5 + 3).0, [255, 0, 255]);
    }

    #[test]
    fn value_range_widens_constant_values() {
        assert_eq!(value_range(&[2.0, 2.0]), (1.5, 2.5));
        assert_eq!(value_range(&[f32::NAN]), (-0.5, 0.5));
        assert_eq!(value_range(&[0.0, 1.0, f32::NAN]), (0.0, 1.0));
    }
}
