//! The one-batch shape check of `pretext validate`: a tiny batch through the composed pipeline.

use pretext_plugin_api::{Split, StepInfo};

use super::pipeline::Pipeline;

fn shape(tensor: &tch::Tensor) -> String {
    format!("{:?}", tensor.size())
}

/// Runs two train samples through the encoder and every phase of the objective, without updating
/// anything; the error names both plugins and both shapes.
pub fn check_shapes(pipeline: &mut Pipeline) -> Result<(), String> {
    let count = pipeline.data_info.train_len.min(2) as i64;
    if count == 0 {
        return Err(format!("dataset `{}` has an empty train split", pipeline.dataset.id.name));
    }
    let indices: Vec<i64> = (0..count).collect();
    let dataset = pipeline.dataset.id.name.clone();
    let encoder = pipeline.encoder.id.name.clone();
    let batch =
        pipeline.dataset.batch(Split::Train, &indices).map_err(|error| error.to_string())?;
    let batch = pretext_plugin_api::Batch {
        inputs: batch.inputs.to_device(pipeline.device),
        labels: batch.labels.map(|labels| labels.to_device(pipeline.device)),
    };
    let input_shape = shape(&batch.inputs);
    let output = pipeline.encoder.forward(&batch.inputs, false).map_err(|error| {
        format!("encoder `{encoder}` rejected a batch of shape {input_shape} from dataset `{dataset}`: {}", error.message)
    })?;
    let output_shape = shape(&output.features);
    let expected = pipeline.encoder_info.output_dim;
    if output.features.size() != [count, expected] {
        return Err(format!(
            "encoder `{encoder}` declares output dimension {expected} but returned shape {output_shape} for a batch of shape {input_shape} from dataset `{dataset}`"
        ));
    }
    let Some(objective) = pipeline.objective.as_mut() else {
        return Ok(());
    };
    let objective_name = objective.id.name.clone();
    let phases = objective.phases().map_err(|error| error.to_string())?;
    for phase in phases {
        let result =
            objective.loss(StepInfo { step: 0, epoch: 0 }, &phase.name, &batch, &pipeline.encoder);
        match result {
            Ok(loss) if loss.loss.numel() == 1 => {}
            Ok(loss) => {
                return Err(format!(
                    "objective `{objective_name}` returned a loss of shape {} in phase `{}`; a loss must be a scalar",
                    shape(&loss.loss),
                    phase.name
                ));
            }
            Err(error) => {
                return Err(format!(
                    "objective `{objective_name}` failed on encoder `{encoder}` output of shape {output_shape} (dataset `{dataset}` batch of shape {input_shape}) in phase `{}`: {}",
                    phase.name, error
                ));
            }
        }
    }
    Ok(())
}
