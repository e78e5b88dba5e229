//! The `pretext` command line.
//!
//! Exit codes: 0 success, 1 the run failed (or was interrupted), 2 invalid input (spec,
//! overrides, arguments, or a device that is not available).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    pretext::logging::init();
    cli::main()
}
