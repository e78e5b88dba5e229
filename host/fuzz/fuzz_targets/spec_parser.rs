//! Fuzzes both phases of spec reading: arbitrary text must give a spec or located errors, never a
//! panic. Validation runs against an empty plugin registry, so it exercises every host table and
//! the unknown-plugin paths.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use pretext::plugins::Registry;
use pretext::spec::diagnostic::SourceFile;
use pretext::spec::{raw, validate};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Arc::new(SourceFile { path: "fuzz.toml".into(), text: text.to_owned() });
    let Ok(root) = raw::parse_source(&source) else {
        return;
    };
    let registry = Registry::default();
    if let Err(errors) = validate::validate(&root, &source, &registry) {
        // Formatting every message walks every location, including line and column lookups.
        let _ = errors.to_string();
    }
});
