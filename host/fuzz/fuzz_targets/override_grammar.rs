//! Fuzzes the override grammar: each input line is one `key.path=value` override, applied in
//! order to an empty spec. Any input must give overrides or errors, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pretext::spec::overrides::{apply, parse_override};
use pretext::spec::raw::Table;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parsed = Vec::new();
    for line in text.lines() {
        match parse_override(line) {
            Ok(item) => parsed.push(item),
            Err(error) => {
                let _ = error.to_string();
            }
        }
    }
    let mut root = Table::default();
    if let Err(error) = apply(&mut root, &parsed) {
        let _ = error.to_string();
    }
});
