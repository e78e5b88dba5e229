//! Schemas of the host's own tables, `[trainer]` and `[tracking]`, in the same form as plugin
//! schemas so that one checker handles both.

use pretext_plugin_api::Param;
use pretext_plugin_api::ffi::ParamSpec;

/// The `[trainer]` keys, their defaults and bounds.
pub fn trainer_schema() -> Vec<ParamSpec> {
    vec![
        Param::int("epochs", 10, "passes over the train split; 0 evaluates the encoder as it is")
            .min(0.0),
        Param::int("batch_size", 64, "samples per optimizer step").min(1.0),
        Param::string("optimizer", "adam", "optimizer algorithm")
            .choices(&["sgd", "adam", "adamw"]),
        Param::float("lr", 1e-3, "learning rate").min(0.0),
        Param::float("weight_decay", 0.0, "L2 penalty (decoupled for adamw)").min(0.0),
        Param::float("momentum", 0.9, "SGD momentum").range(0.0, 1.0),
        Param::float("beta1", 0.9, "Adam first-moment decay").range(0.0, 1.0),
        Param::float("beta2", 0.999, "Adam second-moment decay").range(0.0, 1.0),
        Param::float("grad_clip", 0.0, "maximum global gradient norm; 0 disables clipping")
            .min(0.0),
        Param::int("eval_every", 0, "evaluate every N epochs; 0 evaluates only at the end")
            .min(0.0),
        Param::int("log_every", 10, "record the training loss every N steps").min(1.0),
        Param::string("device", "auto", "\"auto\", \"cpu\", \"cuda\" or \"cuda:N\""),
        Param::bool("shuffle", true, "reshuffle the train split every epoch"),
        Param::bool("drop_last", false, "skip the last batch of an epoch when it is smaller"),
        Param::int("threads", 0, "libtorch CPU threads; 0 keeps libtorch's default").min(0.0),
        Param::int(
            "prefetch",
            0,
            "batches read ahead on a background thread; 0 (the default, fastest for in-memory datasets on few cores) reads each batch when it is needed",
        )
        .min(0.0),
        Param::int(
            "checkpoint_every",
            0,
            "save a checkpoint every N steps and at each epoch end; 0 saves only the final one",
        )
        .min(0.0),
        Param::int("keep_checkpoints", 3, "how many of the latest periodic checkpoints to keep")
            .min(1.0),
        Param::string(
            "best_metric",
            "",
            "metric (such as `linear_probe/accuracy`) whose best value at an evaluation keeps a \
             copy of that checkpoint as checkpoints/best; empty keeps none",
        ),
        Param::string("best_mode", "max", "whether a larger or a smaller best_metric is better")
            .choices(&["max", "min"]),
        Param::string(
            "on_nan",
            "fail",
            "on a NaN or infinite loss: fail the run naming the step, or skip that batch",
        )
        .choices(&["fail", "skip_batch"]),
    ]
    .into_iter()
    .map(Param::into_spec)
    .collect()
}

/// The `[tracking]` keys.
pub fn tracking_schema() -> Vec<ParamSpec> {
    vec![
        Param::string(
            "backend",
            "auto",
            "where runs go besides the local store: \"mlflow\" (a server), \"local\" (nowhere \
             else) or \"auto\" (MLflow when `uri` or MLFLOW_TRACKING_URI is set)",
        )
        .choices(&["auto", "local", "mlflow"]),
        Param::string("uri", "", "MLflow server, such as http://127.0.0.1:5000; default MLFLOW_TRACKING_URI"),
        Param::string(
            "experiment",
            "",
            "MLflow experiment; default MLFLOW_EXPERIMENT_NAME, then the spec's `name`",
        ),
        Param::float(
            "retry_seconds",
            120.0,
            "seconds one MLflow request may keep failing before the writer stops and keeps the spool",
        )
        .min(0.0),
        Param::float("timeout_seconds", 30.0, "timeout of one MLflow request, in seconds").min(0.1),
    ]
    .into_iter()
    .map(Param::into_spec)
    .collect()
}
