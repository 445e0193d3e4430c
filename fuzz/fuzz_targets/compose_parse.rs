//! The Compose model on any text: never a panic, whatever the file (YAML or JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = capstan_api::parse_stack("fuzz", text) {
            // What the server does next with an accepted file.
            let _ = capstan_api::policy::Policy::default().check(&spec);
            for svc in spec.services.values() {
                let _ = svc.container_hash();
                let _ = svc.stop_grace();
                let _ = svc.startup_grace();
            }
        }
        let _ = capstan_api::compose::declared_name(text);
    }
});
