//! The apply handler's decoding of a request: the path's stack name (first line), then the
//! body as `PUT /v1/stacks/{stack}` reads it (UTF-8 text, Compose model, policy), and the
//! scale body as JSON. Never a panic.
#![no_main]

use capstan_api::object::ScaleRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ScaleRequest>(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (stack, body) = text.split_once('\n').unwrap_or(("fuzz", text));
    if let Ok(spec) = capstan_api::parse_stack(stack, body) {
        let _ = capstan_api::policy::Policy::default().check(&spec);
        let bytes = serde_json::to_vec(&spec).expect("a parsed spec serialises");
        let back: capstan_api::spec::StackSpec =
            serde_json::from_slice(&bytes).expect("a stored spec reads back");
        assert_eq!(back, spec, "the stored spec round-trips");
    }
});
