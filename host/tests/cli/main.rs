//! Integration tests of the `pretext` binary against the real plugin libraries on disk.

mod autograd;
mod common;
mod compat;
mod loading;
mod methods;
mod mlflow_server;
mod resume;
mod runs;
mod specs;
mod sweeps;
mod templates;
mod tracking;
mod writer;
