//! Composing the plugins named by an experiment into one model.

use std::sync::Arc;

use pretext_plugin_api::ffi::PluginKind;
use pretext_plugin_api::{DatasetInfo, EncoderInfo, ParamGroup, Phase};
use tch::{Device, Tensor};

use crate::plugins::{
    BuildInputs, DatasetInstance, EncoderInstance, EvaluatorInstance, ObjectiveInstance,
    PluginCallError, Registry,
};
use crate::spec::{Experiment, PluginUse};

/// The plugins of one run, built and ready.
pub struct Pipeline {
    pub dataset: Arc<DatasetInstance>,
    pub data_info: DatasetInfo,
    pub encoder: EncoderInstance,
    pub encoder_info: EncoderInfo,
    pub objective: Option<ObjectiveInstance>,
    pub evaluators: Vec<(String, EvaluatorInstance)>,
    pub device: Device,
    pub seed: u64,
}

/// Why a pipeline could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error(transparent)]
    Plugin(#[from] PluginCallError),
    #[error("{kind} `{name}` is not loaded")]
    Missing { kind: PluginKind, name: String },
}

fn plugin<'a>(
    registry: &'a Registry,
    kind: PluginKind,
    use_: &PluginUse,
) -> Result<&'a crate::plugins::LoadedPlugin, ComposeError> {
    registry
        .find(kind, &use_.plugin)
        .ok_or_else(|| ComposeError::Missing { kind, name: use_.plugin.clone() })
}

impl Pipeline {
    /// Builds every plugin of `experiment` on `device`, seeding libtorch first so that parameter
    /// initialisation is reproducible.
    pub fn compose(
        experiment: &Experiment,
        registry: &Registry,
        device: Device,
    ) -> Result<Self, ComposeError> {
        tch::manual_seed(experiment.seed as i64);
        let mut inputs =
            BuildInputs { device, seed: experiment.seed, dataset: None, encoder: None };

        let dataset_plugin = plugin(registry, PluginKind::Dataset, &experiment.dataset)?;
        let dataset = DatasetInstance::create(dataset_plugin, &experiment.dataset.params, &inputs)?;
        let data_info = dataset.info()?;
        inputs.dataset = Some(data_info.clone());

        let encoder_plugin = plugin(registry, PluginKind::Encoder, &experiment.encoder)?;
        let encoder = EncoderInstance::create(encoder_plugin, &experiment.encoder.params, &inputs)?;
        let encoder_info = encoder.info()?;
        inputs.encoder = Some(encoder_info.clone());

        let objective = match &experiment.objective {
            Some(use_) => {
                let objective_plugin = plugin(registry, PluginKind::Objective, use_)?;
                Some(ObjectiveInstance::create(objective_plugin, &use_.params, &inputs)?)
            }
            None => None,
        };
        let mut evaluators = Vec::new();
        for use_ in &experiment.evaluators {
            let evaluator_plugin = plugin(registry, PluginKind::Evaluator, use_)?;
            let evaluator = EvaluatorInstance::create(evaluator_plugin, &use_.params, &inputs)?;
            evaluators.push((use_.label.clone(), evaluator));
        }
        Ok(Self {
            dataset: Arc::new(dataset),
            data_info,
            encoder,
            encoder_info,
            objective,
            evaluators,
            device,
            seed: experiment.seed,
        })
    }

    /// The objective's parameter groups with the encoder's parameters added to the group that
    /// claims them, and the phases of a training step.
    pub fn training_plan(&self) -> Result<Option<TrainingPlan>, PluginCallError> {
        let Some(objective) = &self.objective else {
            return Ok(None);
        };
        let encoder_params = self.encoder.parameters()?;
        let declared = objective.parameter_groups()?;
        let claiming = declared.iter().filter(|group| group.includes_encoder).count();
        if claiming > 1 {
            return Err(PluginCallError {
                plugin: objective.id.clone(),
                method: "parameter_groups",
                message: format!(
                    "{claiming} parameter groups set `includes_encoder`; at most one may, because \
                     the encoder's parameters must have a single optimizer"
                ),
                panicked: false,
            });
        }
        if claiming == 0 && !encoder_params.is_empty() {
            tracing::warn!(objective = %objective.id.name, "no parameter group includes the encoder, so the encoder stays frozen");
        }
        let mut groups = Vec::new();
        for ParamGroup { name, params, includes_encoder } in declared {
            let mut tensors: Vec<Tensor> = Vec::new();
            if includes_encoder {
                tensors.extend(encoder_params.iter().map(|(_, tensor)| tensor.shallow_clone()));
            }
            tensors.extend(params.into_iter().map(|(_, tensor)| tensor));
            groups.push(TrainGroup { name, tensors });
        }
        Ok(Some((groups, objective.phases()?)))
    }

    /// Every trainable tensor by checkpoint name: `encoder.NAME` and `objective.NAME`.
    pub fn named_parameters(&self) -> Result<Vec<(String, Tensor)>, PluginCallError> {
        let mut named: Vec<(String, Tensor)> = self
            .encoder
            .parameters()?
            .into_iter()
            .map(|(name, tensor)| (format!("encoder.{name}"), tensor))
            .collect();
        match self.encoder.buffers() {
            Ok(buffers) => {
                named.extend(
                    buffers.into_iter().map(|(name, tensor)| (format!("encoder.{name}"), tensor)),
                );
            }
            Err(error) if EncoderInstance::is_not_implemented(&error) => {
                tracing::debug!("{error}; the checkpoint holds its parameters only");
            }
            Err(error) => return Err(error),
        }
        if let Some(objective) = &self.objective {
            for group in objective.parameter_groups()? {
                for (name, tensor) in group.params {
                    named.push((format!("objective.{name}"), tensor));
                }
            }
        }
        let mut names: Vec<&str> = named.iter().map(|(name, _)| name.as_str()).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            let owner = if pair[0].starts_with("encoder.") {
                &self.encoder.id
            } else {
                &self.objective.as_ref().expect("objective names").id
            };
            return Err(PluginCallError {
                plugin: owner.clone(),
                method: "parameters",
                message: format!(
                    "two parameters are named `{}`; checkpoint names must be unique",
                    pair[0]
                ),
                panicked: false,
            });
        }
        Ok(named)
    }
}

/// The parameter groups and the phases of one training step.
pub type TrainingPlan = (Vec<TrainGroup>, Vec<Phase>);

/// The tensors one optimizer updates.
pub struct TrainGroup {
    pub name: String,
    pub tensors: Vec<Tensor>,
}
