//! Sweep throughput with 1 and 2 local workers.

fn main() {}
