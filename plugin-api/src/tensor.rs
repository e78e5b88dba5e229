//! Owned libtorch tensor handles that cross the plugin boundary.
//!
//! A tensor is passed between the host and a plugin as the pointer that `tch` itself wraps: a
//! heap-allocated `at::Tensor`. Both sides link the same libtorch shared libraries (checked at load
//! time through the libtorch version), so a handle made on one side is a valid `at::Tensor` on the
//! other, and the autograd graph behind it is shared.

use std::ffi::c_void;
use std::mem::ManuallyDrop;

use abi_stable::StableAbi;
use tch::Tensor;

/// An owned tensor handle with a C-compatible layout.
///
/// The only way to make one is [`RawTensor::new`], so the pointer inside is always a live
/// `at::Tensor` allocated by `tch`; dropping the handle releases it.
#[repr(transparent)]
#[derive(StableAbi)]
pub struct RawTensor {
    handle: *mut c_void,
}

// SAFETY: an `at::Tensor` handle may move between threads like `tch::Tensor`, which is `Send`.
unsafe impl Send for RawTensor {}

impl RawTensor {
    /// Wraps a tensor, taking ownership of its handle.
    pub fn new(tensor: Tensor) -> Self {
        let mut tensor = ManuallyDrop::new(tensor);
        Self { handle: tensor.as_mut_ptr().cast() }
    }

    /// Wraps a new handle to the same tensor, sharing storage and autograd history.
    pub fn share(tensor: &Tensor) -> Self {
        Self::new(tensor.shallow_clone())
    }

    /// Turns the handle back into a `tch` tensor, which then owns it.
    pub fn into_tensor(self) -> Tensor {
        let handle = ManuallyDrop::new(self).handle;
        // SAFETY: `handle` came from `Tensor::as_mut_ptr` in `RawTensor::new` and was not freed,
        // because `RawTensor` is not `Clone` and `self` is consumed here without running `Drop`.
        // Host and plugin link the same libtorch, so the `at::Tensor` layout is the same.
        unsafe { Tensor::from_ptr(handle.cast()) }
    }
}

impl Drop for RawTensor {
    fn drop(&mut self) {
        // SAFETY: same invariant as `into_tensor`; `drop` runs at most once, so the handle is
        // released exactly once.
        drop(unsafe { Tensor::from_ptr(self.handle.cast()) });
    }
}

impl From<Tensor> for RawTensor {
    fn from(tensor: Tensor) -> Self {
        Self::new(tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_autograd_graph() {
        let weight = Tensor::from_slice(&[2.0f32]).set_requires_grad(true);
        let raw = RawTensor::new(&weight * 3.0);
        let output = raw.into_tensor();
        output.sum(tch::Kind::Float).backward();
        assert_eq!(weight.grad().double_value(&[0]), 3.0);
    }

    #[test]
    fn dropping_handle_leaves_original_alive() {
        let original = Tensor::from_slice(&[1.0f32, 2.0]);
        drop(RawTensor::share(&original));
        assert_eq!(original.double_value(&[1]), 2.0);
    }
}
