//! The `pretext` command line.
//!
//! Exit codes: 0 success, 1 the run failed (or was interrupted), 2 invalid input (spec,
//! overrides, arguments, or a device that is not available).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_default_sigpipe();
    pretext::logging::init();
    cli::main()
}

/// Lets `pretext runs | head` end quietly: Rust ignores SIGPIPE, which turns a closed pipe into a
/// panic in `println!`; the default action ends the process as other command-line tools do.
fn restore_default_sigpipe() {
    // SAFETY: called first in `main`, before any thread exists; `SIG_DFL` installs no handler code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
