//! Layouts of earlier minor versions of the interface, for load-time checks.

pub mod v1_0;
