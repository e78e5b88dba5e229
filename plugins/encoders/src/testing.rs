//! Helpers for the unit tests: schema defaults as the host would pass them, and build contexts.

use pretext_plugin_api::tch::Device;
use pretext_plugin_api::{
    BuildContext, DatasetInfo, Description, InputKind, ParamValue, Params, PluginKind,
};

/// Builds the parameters the host would pass: the schema's defaults, then `overrides`.
pub fn params_with(description: Description, overrides: &[(&str, ParamValue)]) -> Params {
    let info = description.into_info(PluginKind::Encoder);
    let values = info
        .params
        .iter()
        .map(|spec| {
            let name = spec.name.to_string();
            let value = match overrides.iter().find(|(key, _)| *key == name) {
                Some((_, value)) => value.clone(),
                None => spec.default.clone().into_option().expect("every param has a default"),
            };
            (name, value)
        })
        .collect();
    Params::new(values)
}

/// A CPU build context for a labelled float dataset with samples of `sample_shape`.
pub fn features_context(sample_shape: &[i64]) -> BuildContext {
    BuildContext {
        device: Device::Cpu,
        seed: 0,
        dataset: Some(DatasetInfo {
            sample_shape: sample_shape.to_vec(),
            input_kind: InputKind::Features,
            vocab_size: 0,
            num_classes: Some(10),
            class_names: Vec::new(),
            train_len: 10,
            test_len: 10,
        }),
        encoder: None,
    }
}

/// A CPU build context for a token dataset of sequences of `length` ids below `vocab_size`.
pub fn tokens_context(length: i64, vocab_size: i64) -> BuildContext {
    let mut context = features_context(&[length]);
    let dataset = context.dataset.as_mut().expect("the context has a dataset");
    dataset.input_kind = InputKind::Tokens;
    dataset.vocab_size = vocab_size;
    context
}
