//! The host's optimizers: SGD, Adam and AdamW over one parameter group each.
//!
//! They are written on tensors here, rather than taken from libtorch's C++ optimizers, because a
//! checkpoint must contain the optimizer state (moments, momentum buffers, step count) for a
//! resumed run to continue exactly, and tch gives no access to the C++ optimizers' state. The
//! update rules follow PyTorch's `torch.optim` single-tensor implementations.

use tch::{COptimizer, Tensor};

use crate::spec::{OptimizerKind, TrainerConfig};

/// PyTorch's default Adam epsilon.
const ADAM_EPS: f64 = 1e-8;

/// Per-parameter state, created on the first step.
#[derive(Default)]
struct ParamState {
    /// Adam's first moment, or SGD's momentum buffer.
    first: Option<Tensor>,
    /// Adam's second moment.
    second: Option<Tensor>,
}

/// An optimizer over one parameter group.
pub struct GroupOptimizer {
    pub name: String,
    kind: OptimizerKind,
    lr: f64,
    weight_decay: f64,
    momentum: f64,
    beta1: f64,
    beta2: f64,
    tensors: Vec<Tensor>,
    state: Vec<ParamState>,
    steps: u64,
    /// A libtorch optimizer over the same tensors that is never stepped: its `zero_grad` resets
    /// gradients to undefined in C++, as PyTorch's `zero_grad(set_to_none=True)` does, so the next
    /// backward pass stores its gradients without a fill and an add per tensor. tch offers no
    /// other way to unset a gradient.
    grad_reset: COptimizer,
}

impl GroupOptimizer {
    /// Creates the optimizer the trainer config names, over `tensors`.
    pub fn new(
        name: &str,
        tensors: Vec<Tensor>,
        config: &TrainerConfig,
    ) -> Result<Self, tch::TchError> {
        let state = tensors.iter().map(|_| ParamState::default()).collect();
        let mut grad_reset = COptimizer::sgd(0.0, 0.0, 0.0, 0.0, false)?;
        for tensor in &tensors {
            grad_reset.add_parameters(tensor, 0)?;
        }
        Ok(Self {
            name: name.to_owned(),
            kind: config.optimizer,
            lr: config.lr,
            weight_decay: config.weight_decay,
            momentum: config.momentum,
            beta1: config.beta1,
            beta2: config.beta2,
            tensors,
            state,
            steps: 0,
            grad_reset,
        })
    }

    /// Clears the gradients of this group's tensors.
    pub fn zero_grad(&self) -> Result<(), tch::TchError> {
        self.grad_reset.zero_grad()
    }

    /// Applies one update to every tensor that has a gradient.
    pub fn step(&mut self) -> Result<(), tch::TchError> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        for (tensor, state) in self.tensors.iter().zip(self.state.iter_mut()) {
            let grad = tensor.grad();
            if !grad.defined() {
                continue;
            }
            let mut param = tensor.shallow_clone();
            match self.kind {
                OptimizerKind::Sgd => {
                    sgd_step(&mut param, &grad, state, self.lr, self.momentum, self.weight_decay)?
                }
                OptimizerKind::Adam | OptimizerKind::AdamW => {
                    let decoupled = self.kind == OptimizerKind::AdamW;
                    let hyper = AdamHyper {
                        lr: self.lr,
                        beta1: self.beta1,
                        beta2: self.beta2,
                        weight_decay: self.weight_decay,
                        decoupled,
                        step: self.steps,
                    };
                    adam_step(&mut param, &grad, state, &hyper)?
                }
            }
        }
        Ok(())
    }

    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The optimizer state as named tensors: `NAME.steps` and `NAME.INDEX.first` / `.second`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut named =
            vec![(format!("{}.steps", self.name), Tensor::from_slice(&[self.steps as i64]))];
        for (index, state) in self.state.iter().enumerate() {
            if let Some(first) = &state.first {
                named.push((format!("{}.{index}.first", self.name), first.detach().copy()));
            }
            if let Some(second) = &state.second {
                named.push((format!("{}.{index}.second", self.name), second.detach().copy()));
            }
        }
        named
    }

    /// Restores state written by [`GroupOptimizer::state_tensors`].
    pub fn load_state(&mut self, saved: &[(String, Tensor)]) -> Result<(), String> {
        let find = |key: &str| saved.iter().find(|(name, _)| name == key).map(|(_, tensor)| tensor);
        let steps_key = format!("{}.steps", self.name);
        let steps =
            find(&steps_key).ok_or_else(|| format!("the checkpoint has no `{steps_key}`"))?;
        self.steps = steps.int64_value(&[0]) as u64;
        let device = self.tensors.first().map(Tensor::device).unwrap_or(tch::Device::Cpu);
        for (index, state) in self.state.iter_mut().enumerate() {
            state.first = find(&format!("{}.{index}.first", self.name))
                .map(|tensor| tensor.to_device(device));
            state.second = find(&format!("{}.{index}.second", self.name))
                .map(|tensor| tensor.to_device(device));
        }
        Ok(())
    }
}

fn sgd_step(
    param: &mut Tensor,
    grad: &Tensor,
    state: &mut ParamState,
    lr: f64,
    momentum: f64,
    weight_decay: f64,
) -> Result<(), tch::TchError> {
    let mut grad = if weight_decay > 0.0 {
        grad.f_add(&param.f_mul_scalar(weight_decay)?)?
    } else {
        grad.shallow_clone()
    };
    if momentum > 0.0 {
        let buffer = match state.first.take() {
            None => grad.f_detach()?.f_clone(&grad)?,
            Some(mut buffer) => {
                let _ = buffer.f_mul_scalar_(momentum)?;
                let _ = buffer.f_add_(&grad)?;
                buffer
            }
        };
        grad = buffer.shallow_clone();
        state.first = Some(buffer);
    }
    let _ = param.f_add_(&grad.f_mul_scalar(-lr)?)?;
    Ok(())
}

struct AdamHyper {
    lr: f64,
    beta1: f64,
    beta2: f64,
    weight_decay: f64,
    decoupled: bool,
    step: u64,
}

fn adam_step(
    param: &mut Tensor,
    grad: &Tensor,
    state: &mut ParamState,
    hyper: &AdamHyper,
) -> Result<(), tch::TchError> {
    let grad = if hyper.weight_decay > 0.0 && !hyper.decoupled {
        grad.f_add(&param.f_mul_scalar(hyper.weight_decay)?)?
    } else {
        grad.shallow_clone()
    };
    if hyper.weight_decay > 0.0 && hyper.decoupled {
        let _ = param.f_mul_scalar_(1.0 - hyper.lr * hyper.weight_decay)?;
    }
    let first = state.first.get_or_insert_with(|| param.zeros_like());
    let second = state.second.get_or_insert_with(|| param.zeros_like());
    // m += (1 - beta1)(g - m) and v += (1 - beta2)(g^2 - v): PyTorch's moment updates.
    let _ = first.f_lerp_(&grad, 1.0 - hyper.beta1)?;
    let _ = second.f_lerp_(&grad.f_square()?, 1.0 - hyper.beta2)?;

    // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps), with sqrt(bc2) moved out of the
    // denominator so that the update takes one kernel fewer per tensor.
    let step = hyper.step as i32;
    let bias_correction1 = 1.0 - hyper.beta1.powi(step);
    let root_bias_correction2 = (1.0 - hyper.beta2.powi(step)).sqrt();
    let step_size = hyper.lr * root_bias_correction2 / bias_correction1;
    let mut denom = second.f_sqrt()?;
    let _ = denom.f_add_scalar_(ADAM_EPS * root_bias_correction2)?;
    let _ = param.f_addcdiv_(&first.f_mul_scalar(-step_size)?, &denom)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::validate::parse_device;
    use tch::Kind;

    fn config(optimizer: OptimizerKind) -> TrainerConfig {
        TrainerConfig {
            epochs: 1,
            batch_size: 1,
            optimizer,
            lr: 0.1,
            weight_decay: 0.01,
            momentum: 0.9,
            beta1: 0.9,
            beta2: 0.999,
            grad_clip: None,
            eval_every: 0,
            log_every: 1,
            device: parse_device("cpu").unwrap(),
            shuffle: false,
            drop_last: false,
            threads: 0,
            skip_non_finite: false,
            prefetch: 0,
            checkpoint_every: 0,
            keep_checkpoints: 1,
            best_metric: None,
            best_is_max: true,
        }
    }

    /// Minimises `(w - 3)^2` and returns `w` after `steps` steps.
    fn run(kind: OptimizerKind, steps: usize) -> f64 {
        let weight = Tensor::from_slice(&[0.0f64]).set_requires_grad(true);
        let mut optimizer =
            GroupOptimizer::new("main", vec![weight.shallow_clone()], &config(kind)).unwrap();
        for _ in 0..steps {
            optimizer.zero_grad().unwrap();
            (&weight - 3.0).square().sum(Kind::Double).backward();
            optimizer.step().unwrap();
        }
        weight.double_value(&[0])
    }

    #[test]
    fn each_optimizer_approaches_minimum() {
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::AdamW] {
            let value = run(kind, 300);
            assert!((value - 3.0).abs() < 0.1, "{kind:?} ended at {value}");
        }
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // With bias correction, Adam's first step is lr * sign(grad) (up to epsilon).
        let weight = Tensor::from_slice(&[0.0f64]).set_requires_grad(true);
        let mut settings = config(OptimizerKind::Adam);
        settings.weight_decay = 0.0;
        let mut optimizer =
            GroupOptimizer::new("main", vec![weight.shallow_clone()], &settings).unwrap();
        (&weight - 3.0).square().sum(Kind::Double).backward();
        optimizer.step().unwrap();
        assert!((weight.double_value(&[0]) - 0.1).abs() < 1e-6);
    }

    #[test]
    fn state_round_trip_continues_identically() {
        let make = || Tensor::from_slice(&[0.5f64, -1.0]).set_requires_grad(true);
        let loss = |weight: &Tensor| (weight * weight * weight).sum(Kind::Double);
        let straight = make();
        let mut optimizer =
            GroupOptimizer::new("g", vec![straight.shallow_clone()], &config(OptimizerKind::Adam))
                .unwrap();
        for _ in 0..6 {
            optimizer.zero_grad().unwrap();
            loss(&straight).backward();
            optimizer.step().unwrap();
        }

        let resumed = make();
        let mut first =
            GroupOptimizer::new("g", vec![resumed.shallow_clone()], &config(OptimizerKind::Adam))
                .unwrap();
        for _ in 0..3 {
            first.zero_grad().unwrap();
            loss(&resumed).backward();
            first.step().unwrap();
        }
        let saved = first.state_tensors();
        let mut second =
            GroupOptimizer::new("g", vec![resumed.shallow_clone()], &config(OptimizerKind::Adam))
                .unwrap();
        second.load_state(&saved).unwrap();
        for _ in 0..3 {
            second.zero_grad().unwrap();
            loss(&resumed).backward();
            second.step().unwrap();
        }
        assert_eq!(
            Vec::<f64>::try_from(&straight).unwrap(),
            Vec::<f64>::try_from(&resumed).unwrap()
        );
    }
}
