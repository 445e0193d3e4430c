//! The env-file readers (`.env`, `--env-file`, a service's `env_file`, `format: raw`) on any text: never a
//! panic; what it accepts has keys without whitespace, and reads the same a second time.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Some variables set, to reach the interpolation with values too.
    let lookup = |name: &str| match name {
        "HOME" => Some("/root".to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    };
    let first = capstan_api::compose::env::parse_env_file(text, &lookup);
    if let Ok(entries) = &first {
        for (key, _) in entries {
            assert!(
                !key.is_empty() && !key.contains(char::is_whitespace),
                "{key:?}"
            );
        }
    }
    assert_eq!(
        capstan_api::compose::env::parse_env_file(text, &lookup),
        first,
        "the same text reads the same"
    );
    // `format: raw` on the same text: never a panic, and no key with whitespace either.
    if let Ok(entries) = capstan_api::compose::env::parse_raw_env_file(text) {
        for (key, _) in entries {
            assert!(!key.contains(char::is_whitespace), "{key:?}");
        }
    }
});
