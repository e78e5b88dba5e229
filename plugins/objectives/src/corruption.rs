//! Random input corruptions: Gaussian noise, masking and random shifts of images.
//!
//! Every draw comes from libtorch's global generator, which the host seeds with the experiment
//! seed before it builds the plugins, so a run with the same seed draws the same corruptions.

use pretext_plugin_api::tch::{Kind, Tensor};
use pretext_plugin_api::{Result, ensure};

/// Adds independent Gaussian noise of standard deviation `std` to every value.
pub fn gaussian_noise(inputs: &Tensor, std: f64) -> Result<Tensor> {
    if std == 0.0 {
        return Ok(inputs.shallow_clone());
    }
    Ok(inputs.f_add(&inputs.f_randn_like()?.f_mul_scalar(std)?)?)
}

/// Draws a boolean mask of the shape of `inputs` that is true with probability `fraction`.
pub fn bernoulli_mask(inputs: &Tensor, fraction: f64) -> Result<Tensor> {
    Ok(inputs.f_rand_like()?.f_lt(fraction)?)
}

/// Sets each value to zero with probability `fraction` (pixel masking, or feature dropout without
/// rescaling).
pub fn mask_values(inputs: &Tensor, fraction: f64) -> Result<Tensor> {
    if fraction == 0.0 {
        return Ok(inputs.shallow_clone());
    }
    let mask = bernoulli_mask(inputs, fraction)?;
    Ok(inputs.f_masked_fill(&mask, 0.0)?)
}

/// Shifts each image of `[batch, channels, height, width]` by its own random offset of up to
/// `max_shift` pixels along each axis, filling the uncovered border with zeros.
///
/// This is the pad-and-crop augmentation: pad by `max_shift` on every side, then crop a window of
/// the original size at a random position.
pub fn random_shift(images: &Tensor, max_shift: i64) -> Result<Tensor> {
    let size = images.size();
    ensure!(size.len() == 4, "random shift needs [batch, channels, height, width], found {size:?}");
    if max_shift == 0 {
        return Ok(images.shallow_clone());
    }
    let [batch, channels, height, width] = size[..] else { unreachable!() };
    let device = images.device();
    let padded = images.f_constant_pad_nd([max_shift, max_shift, max_shift, max_shift])?;

    // Offsets in [0, 2 * max_shift] per sample; offset max_shift leaves the image in place.
    let offsets = Tensor::f_randint(2 * max_shift + 1, [batch, 2], (Kind::Int64, device))?;
    let rows = Tensor::f_arange(height, (Kind::Int64, device))?
        .f_unsqueeze(0)?
        .f_add(&offsets.f_narrow(1, 0, 1)?)?;
    let columns = Tensor::f_arange(width, (Kind::Int64, device))?
        .f_unsqueeze(0)?
        .f_add(&offsets.f_narrow(1, 1, 1)?)?;

    let padded_width = width + 2 * max_shift;
    let row_index = rows
        .f_view([batch, 1, height, 1])?
        .f_expand([batch, channels, height, padded_width], false)?;
    let picked_rows = padded.f_gather(2, &row_index, false)?;
    let column_index =
        columns.f_view([batch, 1, 1, width])?.f_expand([batch, channels, height, width], false)?;
    Ok(picked_rows.f_gather(3, &column_index, false)?)
}

#[cfg(test)]
mod tests {
    use pretext_plugin_api::tch::{self, Device};

    use super::*;

    #[test]
    fn zero_strength_leaves_inputs_unchanged() {
        let inputs = Tensor::rand([4, 1, 3, 3], (Kind::Float, Device::Cpu));

        assert!(gaussian_noise(&inputs, 0.0).unwrap().equal(&inputs));
        assert!(mask_values(&inputs, 0.0).unwrap().equal(&inputs));
        assert!(random_shift(&inputs, 0).unwrap().equal(&inputs));
    }

    #[test]
    fn masking_zeroes_about_the_fraction() {
        tch::manual_seed(0);
        let inputs = Tensor::ones([100, 100], (Kind::Float, Device::Cpu));

        let masked = mask_values(&inputs, 0.3).unwrap();
        let zero_share = masked.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((zero_share - 0.3).abs() < 0.02, "zero share {zero_share}");
    }

    #[test]
    fn noise_has_requested_spread() {
        tch::manual_seed(0);
        let inputs = Tensor::zeros([200, 100], (Kind::Float, Device::Cpu));

        let noisy = gaussian_noise(&inputs, 0.5).unwrap();
        let std = noisy.std(true).double_value(&[]);
        assert!((std - 0.5).abs() < 0.02, "std {std}");
    }

    #[test]
    fn shift_moves_a_single_pixel_within_range() {
        tch::manual_seed(0);
        // One bright pixel in the centre of each 5x5 image.
        let images = Tensor::zeros([64, 1, 5, 5], (Kind::Float, Device::Cpu));
        let _ = images.narrow(2, 2, 1).narrow(3, 2, 1).fill_(1.0);

        let shifted = random_shift(&images, 1).unwrap();
        assert_eq!(shifted.size(), [64, 1, 5, 5]);
        let totals: Vec<f32> =
            Vec::try_from(shifted.sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float)).unwrap();
        assert!(totals.iter().all(|&total| total == 1.0), "a pixel left the image: {totals:?}");
        let flat = shifted.view([64, 25]).argmax(1, false);
        let positions: Vec<i64> = Vec::try_from(flat).unwrap();
        for position in &positions {
            let (row, column) = (position / 5, position % 5);
            assert!((1..=3).contains(&row) && (1..=3).contains(&column), "pixel at {position}");
        }
        let moved = positions.iter().filter(|&&position| position != 12).count();
        assert!(moved > 32, "only {moved} of 64 images moved");
    }
}
