//! The host's optimizers: one libtorch optimizer per parameter group.

use tch::{COptimizer, Tensor};

use crate::spec::{OptimizerKind, TrainerConfig};

/// PyTorch's default Adam epsilon.
const ADAM_EPS: f64 = 1e-8;

/// An optimizer over one parameter group.
pub struct GroupOptimizer {
    pub name: String,
    optimizer: COptimizer,
    tensors: Vec<Tensor>,
}

impl GroupOptimizer {
    /// Creates the optimizer the trainer config names, over `tensors`.
    pub fn new(
        name: &str,
        tensors: Vec<Tensor>,
        config: &TrainerConfig,
    ) -> Result<Self, tch::TchError> {
        let mut optimizer = match config.optimizer {
            OptimizerKind::Sgd => {
                COptimizer::sgd(config.lr, config.momentum, 0.0, config.weight_decay, false)?
            }
            OptimizerKind::Adam => COptimizer::adam(
                config.lr,
                config.beta1,
                config.beta2,
                config.weight_decay,
                ADAM_EPS,
                false,
            )?,
            OptimizerKind::AdamW => COptimizer::adamw(
                config.lr,
                config.beta1,
                config.beta2,
                config.weight_decay,
                ADAM_EPS,
                false,
            )?,
        };
        for tensor in &tensors {
            optimizer.add_parameters(tensor, 0)?;
        }
        Ok(Self { name: name.to_owned(), optimizer, tensors })
    }

    pub fn zero_grad(&self) -> Result<(), tch::TchError> {
        self.optimizer.zero_grad()
    }

    pub fn step(&self) -> Result<(), tch::TchError> {
        self.optimizer.step()
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }
}

/// Scales the gradients of `tensors` so that their global L2 norm is at most `max_norm`, as
/// `torch.nn.utils.clip_grad_norm_` does; returns the norm before clipping.
pub fn clip_grad_norm(tensors: &[&Tensor], max_norm: f64) -> f64 {
    let _guard = tch::no_grad_guard();
    let mut total = 0.0;
    let grads: Vec<Tensor> =
        tensors.iter().map(|tensor| tensor.grad()).filter(Tensor::defined).collect();
    for grad in &grads {
        let norm = grad.norm().double_value(&[]);
        total += norm * norm;
    }
    let total = total.sqrt();
    let scale = max_norm / (total + 1e-6);
    if scale < 1.0 {
        for grad in &grads {
            let mut grad = grad.shallow_clone();
            let _ = grad.f_mul_scalar_(scale);
        }
    }
    total
}
