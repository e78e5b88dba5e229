//! Gradients cross plugin boundaries: an objective's loss reaches the encoder's parameters.

use pretext::plugins::{
    BuildInputs, DatasetInstance, EncoderInstance, ObjectiveInstance, Registry,
};
use pretext_plugin_api::{PluginKind, Split, StepInfo};
use tch::Device;

use crate::common::library;

fn registry() -> Registry {
    let mut registry = Registry::default();
    let libraries: Vec<_> =
        ["libpretext_datasets.so", "libpretext_encoders.so", "libpretext_objectives.so"]
            .into_iter()
            .map(library)
            .collect();
    registry.load_spec_paths(&libraries);
    assert!(registry.warnings().is_empty(), "{:?}", registry.warnings());
    registry
}

fn defaults(
    registry: &Registry,
    kind: PluginKind,
    name: &str,
) -> Vec<(String, pretext_plugin_api::ParamValue)> {
    let plugin = registry.find(kind, name).unwrap_or_else(|| panic!("{name} not loaded"));
    plugin
        .params
        .iter()
        .map(|spec| {
            (spec.name.to_string(), spec.default.clone().into_option().expect("has a default"))
        })
        .collect()
}

#[test]
fn loss_gradient_reaches_encoder_parameters() {
    let registry = registry();
    tch::manual_seed(0);
    let mut inputs = BuildInputs { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
    let dataset_plugin = registry.find(PluginKind::Dataset, "digits").unwrap();
    let dataset = DatasetInstance::create(
        dataset_plugin,
        &defaults(&registry, PluginKind::Dataset, "digits"),
        &inputs,
    )
    .unwrap();
    inputs.dataset = Some(dataset.info().unwrap());
    let encoder_plugin = registry.find(PluginKind::Encoder, "mlp").unwrap();
    let encoder = EncoderInstance::create(
        encoder_plugin,
        &defaults(&registry, PluginKind::Encoder, "mlp"),
        &inputs,
    )
    .unwrap();
    inputs.encoder = Some(encoder.info().unwrap());
    let objective_plugin = registry.find(PluginKind::Objective, "autoencoder").unwrap();
    let mut objective = ObjectiveInstance::create(
        objective_plugin,
        &defaults(&registry, PluginKind::Objective, "autoencoder"),
        &inputs,
    )
    .unwrap();

    let batch = dataset.batch(Split::Train, &[0, 1, 2, 3]).unwrap();
    let output = objective.loss(StepInfo { step: 0, epoch: 0 }, "main", &batch, &encoder).unwrap();
    output.loss.backward();

    let encoder_params = encoder.parameters().unwrap();
    assert!(!encoder_params.is_empty());
    for (name, tensor) in &encoder_params {
        let grad = tensor.grad();
        assert!(grad.defined(), "encoder parameter {name} has no gradient");
        assert!(
            grad.abs().sum(tch::Kind::Double).double_value(&[]) > 0.0,
            "encoder parameter {name} has a zero gradient"
        );
    }
    let groups = objective.parameter_groups().unwrap();
    assert!(groups[0].includes_encoder);
    for (name, tensor) in &groups[0].params {
        assert!(tensor.grad().defined(), "objective parameter {name} has no gradient");
    }
}

#[test]
fn host_optimizer_updates_plugin_tensors() {
    let registry = registry();
    let mut inputs = BuildInputs { device: Device::Cpu, seed: 0, dataset: None, encoder: None };
    let dataset_plugin = registry.find(PluginKind::Dataset, "digits").unwrap();
    let dataset = DatasetInstance::create(
        dataset_plugin,
        &defaults(&registry, PluginKind::Dataset, "digits"),
        &inputs,
    )
    .unwrap();
    inputs.dataset = Some(dataset.info().unwrap());
    let encoder_plugin = registry.find(PluginKind::Encoder, "mlp").unwrap();
    let encoder = EncoderInstance::create(
        encoder_plugin,
        &defaults(&registry, PluginKind::Encoder, "mlp"),
        &inputs,
    )
    .unwrap();

    let (name, weight) = encoder.parameters().unwrap().into_iter().next().unwrap();
    let before = weight.detach().copy();
    let mut optimizer = tch::COptimizer::sgd(0.1, 0.0, 0.0, 0.0, false).unwrap();
    optimizer.add_parameters(&weight, 0).unwrap();
    let batch = dataset.batch(Split::Train, &[0, 1]).unwrap();
    let features = encoder.forward(&batch.inputs, true).unwrap().features;
    features.square().sum(tch::Kind::Float).backward();
    optimizer.step().unwrap();

    let after =
        encoder.parameters().unwrap().into_iter().find(|(other, _)| *other == name).unwrap().1;
    let change = (&after - &before).abs().sum(tch::Kind::Double).double_value(&[]);
    assert!(change > 0.0, "the step did not change {name} inside the plugin");
}
