//! Why a key is refused: said once, for that key, instead of listing every supported key.

/// Keys of the Compose specification that `capstan apply` resolves on the client; a
/// document sent straight to the API must already be resolved.
const CLIENT_SIDE: &[&str] = &["extends", "profiles", "env_file", "include"];

/// Service keys of the Compose specification that capstan does not honour yet.
const SERVICE_OPTIONS: &[&str] = &[
    "attach",
    "credential_spec",
    "develop",
    "driver_opts",
    "gpus",
    "isolation",
    "provider",
    "use_api_socket",
    "models",
    "label_file",
];

/// Keys of the Compose specification for a top-level network (`enable_ipv4`) or a service's
/// attachment to one (the rest) that capstan does not honour yet.
const NETWORK_OPTIONS: &[&str] = &[
    "enable_ipv4",
    "mac_address",
    "driver_opts",
    "gw_priority",
    "interface_name",
];

/// Whether `path` is a top-level network or a service's attachment to one.
fn network_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('.').collect();
    matches!(
        parts.as_slice(),
        ["networks", _] | ["services", _, "networks", _]
    )
}

/// Why `key` of a top-level secret or config is refused, when it is one that only Swarm's
/// secret and config objects have: Swarm keeps such an object in its cluster store and hands
/// it to a container; capstan writes the value it was sent to a file on the host.
fn swarm_file_option(path: &str, key: &str) -> Option<String> {
    let parts: Vec<&str> = path.split('.').collect();
    let secret = match parts.as_slice() {
        ["secrets", _] => true,
        ["configs", _] => false,
        _ => return None,
    };
    let why = match key {
        // The Compose specification has `driver` and `driver_opts` for secrets only.
        "driver" | "driver_opts" if secret => {
            "a Swarm secret driver (a plugin Swarm asks for the value) and its options; \
             capstan runs without Swarm and takes the value from `file` or `environment`"
        }
        "template_driver" => {
            "Swarm renders the value as a template when it mounts it; capstan runs without \
             Swarm and mounts the value exactly as it was sent, so a template would stay \
             unrendered"
        }
        "labels" => {
            "labels of the Swarm object that holds the value; capstan runs without Swarm and \
             makes no such object (the value is a file on the host), so there is nothing to \
             label"
        }
        _ => return None,
    };
    Some(format!("unsupported key {key:?}: {why}"))
}

/// The reason `key` at `path` is refused.
pub(super) fn unsupported(path: &str, key: &str) -> String {
    if let Some(reason) = swarm_file_option(path, key) {
        return reason;
    }
    if CLIENT_SIDE.contains(&key) {
        return format!(
            "unsupported key {key:?}: `capstan apply -f` resolves it on the client; \
             a document sent to the API must be resolved already"
        );
    }
    match (path, key) {
        (_, "<<") => "a YAML merge key that was not expanded: its value must be an alias \
                      (`<<: *name`) or a list of aliases (`<<: [*a, *b]`) to maps"
            .into(),
        (p, "additional_contexts") if p.starts_with("services.") && p.ends_with(".build") => {
            "unsupported key \"additional_contexts\": named build contexts are a BuildKit \
             feature, and capstan builds with the engine's classic builder (BuildKit needs \
             buildx), which has no such contexts; copy the files into the context, or build \
             the image with `docker buildx build` and name it in `image`"
                .into()
        }
        (p, "ulimits") if p.starts_with("services.") && p.ends_with(".build") => {
            "unsupported key \"ulimits\": the engine's classic builder takes build ulimits, \
             but the Docker client library capstan uses cannot send them yet, so they would \
             be dropped; set them on the service (`ulimits:`) for its containers"
                .into()
        }
        (p, k) if p.starts_with("services.") && p.ends_with(".build") => format!(
            "unsupported key {k:?}: a Compose build option capstan does not honour yet (the \
             engine's classic builder is used), refused rather than ignored"
        ),
        ("", "models") => format!(
            "unsupported key {key:?}: capstan does not manage {key} yet; mount a file with a \
             bind volume instead"
        ),
        (p, "placement" | "endpoint_mode") if p.ends_with(".deploy") => format!(
            "unsupported key {key:?}: a Swarm cluster setting; capstan runs on one Docker host"
        ),
        (p, k) if network_path(p) && NETWORK_OPTIONS.contains(&k) => format!(
            "unsupported key {k:?}: a Compose network option capstan does not honour yet, \
             refused rather than ignored"
        ),
        (p, k) if p.starts_with("services.") && p.matches('.').count() == 1 && SERVICE_OPTIONS.contains(&k) => {
            format!("unsupported key {k:?}: a Compose option capstan does not honour yet, refused rather than ignored")
        }
        (_, k) => format!(
            "unsupported key {k:?}: not a key capstan knows here (a typo? extension fields start with \"x-\")"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn a_refused_key_says_why_without_listing_every_supported_key() {
        let errs = errors("services: {web: {image: x, gpus: all, imgae: y, profiles: [a]}}");
        assert_eq!(errs[0].field, "services.web.gpus");
        assert!(
            errs[0].reason.contains("does not honour yet"),
            "{}",
            errs[0].reason
        );
        assert!(errs[1].reason.contains("a typo?"), "{}", errs[1].reason);
        assert!(
            errs[2].reason.contains("capstan apply -f"),
            "{}",
            errs[2].reason
        );
        assert!(errs.iter().all(|e| !e.reason.contains("capstan supports")));
        assert!(
            errors("services: {web: {image: x, deploy: {placement: {}}}}")[0]
                .reason
                .contains("one Docker host")
        );
        assert!(errors("services: {web: {image: x}}\nmodels: {}")[0]
            .reason
            .contains("does not manage models"));
        let errs = errors(
            "services: {web: {image: x, networks: {back: {gw_priority: 1}}}}\nnetworks: {back: {enable_ipv4: true}}",
        );
        assert_eq!(
            (errs[0].field.as_str(), errs[1].field.as_str()),
            (
                "networks.back.enable_ipv4",
                "services.web.networks.back.gw_priority"
            )
        );
        assert!(errs.iter().all(|e| e
            .reason
            .contains("network option capstan does not honour yet")));
    }

    #[test]
    fn build_keys_the_classic_builder_cannot_take_from_capstan_say_why() {
        let errs = errors(
            "services: {web: {build: {context: ., additional_contexts: {assets: ./a}, ulimits: {nofile: 1024}}}}",
        );
        assert!(errs[0].reason.contains("BuildKit"), "{}", errs[0].reason);
        assert!(
            errs[1].reason.contains("set them on the service"),
            "{}",
            errs[1].reason
        );
    }

    #[test]
    fn swarm_only_keys_of_top_level_secrets_and_configs_say_that_capstan_runs_without_swarm() {
        let errs = errors(
            r#"
services: {web: {image: x}}
secrets:
  pw: {content: x, driver: vault, driver_opts: {path: db}, labels: {team: core}, template_driver: golang}
configs:
  site: {content: x, labels: [team=core], template_driver: golang, driver: vault}
"#,
        );
        let reason = |field: &str| {
            let e = errs.iter().find(|e| e.field == field);
            e.unwrap_or_else(|| panic!("no error at {field}: {errs:#?}"))
                .reason
                .clone()
        };
        for field in [
            "secrets.pw.driver",
            "secrets.pw.driver_opts",
            "secrets.pw.labels",
            "secrets.pw.template_driver",
            "configs.site.labels",
            "configs.site.template_driver",
        ] {
            let r = reason(field);
            assert!(
                r.contains("without Swarm") && !r.contains("a typo?"),
                "{field}: {r}"
            );
        }
        assert!(reason("secrets.pw.driver").contains("`file` or `environment`"));
        assert!(reason("configs.site.template_driver").contains("unrendered"));
        // A config has no driver in the Compose specification: that one is a mistake.
        assert!(reason("configs.site.driver").contains("a typo?"));
    }
}
