//! Resolving the requested device against what this libtorch build can use.

use tch::{Cuda, Device};

use crate::spec::DeviceRequest;

/// The libtorch build in use, such as `2.11.0+cu130`, for messages and tags.
pub fn libtorch_build() -> &'static str {
    pretext_plugin_api::LIBTORCH_VERSION
}

/// Resolves `auto`, `cpu`, `cuda` or `cuda:N`.
///
/// # Errors
///
/// Returns a message naming the libtorch build when CUDA is requested but not available, or when
/// the device index is out of range.
pub fn resolve(request: &DeviceRequest) -> Result<Device, String> {
    match request {
        DeviceRequest::Cpu => Ok(Device::Cpu),
        DeviceRequest::Auto => Ok(if Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        DeviceRequest::Cuda(index) => {
            let requested = request.to_string();
            if !Cuda::is_available() {
                return Err(format!(
                    "`trainer.device = \"{requested}\"` requests CUDA, but no CUDA device is \
                     available to libtorch {} on this machine; use `trainer.device=cpu` or \
                     `auto`",
                    libtorch_build()
                ));
            }
            let count = Cuda::device_count() as usize;
            let index = index.unwrap_or(0);
            if index >= count {
                return Err(format!(
                    "`trainer.device = \"{requested}\"` requests CUDA device {index}, but libtorch \
                     {} sees {count} device(s) (0..{})",
                    libtorch_build(),
                    count.saturating_sub(1)
                ));
            }
            Ok(Device::Cuda(index))
        }
    }
}

/// The name a run records for a device.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cuda(index) => format!("cuda:{index}"),
        _ => "cpu".to_owned(),
    }
}
