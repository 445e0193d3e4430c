//! Compose interpolation on any text: never a panic; text without a `$` is itself; any text
//! written with every `$` doubled reads back as itself; and a whole document (read as YAML
//! when it is some) interpolates and types its fields without a panic.
#![no_main]

use capstan_api::compose::interpolate::{expand, interpolate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Some variables set, one empty, so that every operator takes both of its branches.
    let lookup = |name: &str| match name {
        "HOME" => Some("/root".to_string()),
        "EMPTY" => Some(String::new()),
        "NESTED" => Some("${HOME}".to_string()),
        _ => None,
    };
    let once = expand(text, &lookup, &mut vec![]);
    if !text.contains('$') {
        assert_eq!(once.as_deref(), Ok(text), "text without $ is unchanged");
    }
    assert_eq!(
        expand(&text.replace('$', "$$"), &lookup, &mut vec![]).as_deref(),
        Ok(text),
        "$$ is a literal $"
    );
    if let Ok(mut doc) = capstan_api::compose::yaml::parse(text) {
        let _ = interpolate(&mut doc, &lookup);
    }
});
