//! Layer initialisations that reproduce PyTorch's defaults, shared by the encoders.

use pretext_plugin_api::tch::nn::{ConvConfig, Init, LinearConfig};

/// Builds a linear layer configuration that reproduces PyTorch's `nn.Linear` initialisation.
///
/// PyTorch draws weights with `kaiming_uniform_(a=sqrt(5))`, which is uniform on
/// `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`. The default of tch 0.24 uses the ReLU gain instead and
/// draws from a range `sqrt(6)` times wider, so the weight range is set here. The bias default of
/// tch is already PyTorch's, uniform on the same range.
pub fn torch_linear_config(fan_in: i64) -> LinearConfig {
    let bound = 1.0 / (fan_in as f64).sqrt();
    LinearConfig { ws_init: Init::Uniform { lo: -bound, up: bound }, ..LinearConfig::default() }
}

/// Builds a 2-D convolution configuration that reproduces PyTorch's `nn.Conv2d` initialisation.
///
/// PyTorch draws both weights and biases uniformly on `[-1/sqrt(fan_in), 1/sqrt(fan_in)]`, with
/// `fan_in = in_channels * kernel_size^2`. tch 0.24 uses a wider weight range and zero biases.
pub fn torch_conv_config(in_channels: i64, kernel_size: i64, padding: i64) -> ConvConfig {
    let bound = 1.0 / ((in_channels * kernel_size * kernel_size) as f64).sqrt();
    ConvConfig {
        padding,
        ws_init: Init::Uniform { lo: -bound, up: bound },
        bs_init: Init::Uniform { lo: -bound, up: bound },
        ..ConvConfig::default()
    }
}
