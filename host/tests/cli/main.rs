//! Integration tests of the `pretext` binary against the real plugin libraries on disk.

mod autograd;
mod common;
mod loading;
mod runs;
mod specs;
