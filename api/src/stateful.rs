//! The stateful guard: one rule, for apply and scale alike, that refuses more than one replica
//! of a service mounting a named volume read-write (replicas writing the same files corrupt
//! them), unless the volume is declared shared or each replica gets a volume of its own.
//!
//! - **Shared**: the top-level volume carries the label `capstan.shared: "true"`; the
//!   replicas are then trusted to coordinate their writes.
//! - **Per replica**: a volume whose name holds `{{replica}}` (`data-{{replica}}`, declared
//!   under that name at the top level too) is one volume per ordinal: `<stack>_data-1`,
//!   `<stack>_data-2`, ... Replica `n` always mounts volume `n`, across replacements and
//!   scaling; the volumes are removed only with `delete --volumes`.
//!
//! Read-only mounts never count.

use crate::spec::{MountKind, ServiceSpec, StackSpec, VolumeSpec};
use std::collections::BTreeMap;

/// What stands for the replica's ordinal in a per-replica volume's name.
pub const REPLICA_PLACEHOLDER: &str = "{{replica}}";

/// The label that declares a top-level volume safe to share between replicas.
pub const SHARED_LABEL: &str = "capstan.shared";

/// Whether the volume name `source` is per replica.
pub fn is_per_replica(source: &str) -> bool {
    source.contains(REPLICA_PLACEHOLDER)
}

/// The name of replica `ordinal`'s volume for `source` (`source` itself when not per replica).
pub fn replica_volume(source: &str, ordinal: u32) -> String {
    source.replace(REPLICA_PLACEHOLDER, &ordinal.to_string())
}

/// Whether `source` is a volume name once its placeholder is filled in.
pub fn valid_volume_source(source: &str) -> bool {
    crate::names::valid_member_name(&replica_volume(source, 1))
}

impl VolumeSpec {
    /// Whether the volume is declared safe to share between replicas.
    pub fn shared(&self) -> bool {
        self.labels.get(SHARED_LABEL).is_some_and(|v| v == "true")
    }
}

/// The guard for `spec` with the stack's top-level `volumes`: each problem as (field under
/// the service, reason). None when the service has at most one replica.
pub fn replica_problems(
    service: &str,
    spec: &ServiceSpec,
    volumes: &BTreeMap<String, VolumeSpec>,
) -> Vec<(String, String)> {
    if spec.replicas <= 1 {
        return vec![];
    }
    let mut out = vec![];
    for (i, m) in spec.volumes.iter().enumerate() {
        let (MountKind::Volume, Some(source)) = (&m.kind, &m.source) else {
            continue;
        };
        let shared = volumes.get(source).is_some_and(VolumeSpec::shared);
        if m.read_only || shared || is_per_replica(source) {
            continue;
        }
        out.push((
            format!("volumes[{i}]"),
            format!(
                "named volume {source:?} is mounted read-write and service {service} has {} replicas, which would write the same files; mount it read-only (`:ro`), give each replica its own volume (name it `{source}-{REPLICA_PLACEHOLDER}`, declared so at the top level too), or declare it shared with the label `{SHARED_LABEL}: \"true\"` on the top-level volume",
                spec.replicas
            ),
        ));
    }
    out
}

/// Top-level volumes that are per replica cannot be `external` or carry a fixed `name`: one
/// engine volume would then serve every replica. Each problem as (field, reason).
pub fn declaration_problems(spec: &StackSpec) -> Vec<(String, String)> {
    let mut out = vec![];
    for (key, v) in spec.volumes.iter().filter(|(k, _)| is_per_replica(k)) {
        let path = format!("volumes.{key}");
        if !valid_volume_source(key) {
            out.push((
                path.clone(),
                format!("{key:?} is not a volume name once {REPLICA_PLACEHOLDER} is an ordinal"),
            ));
        }
        if v.external {
            out.push((format!("{path}.external"), "a per-replica volume is created by capstan for each replica; it cannot be external".into()));
        }
        if v.name.is_some() {
            out.push((format!("{path}.name"), "a per-replica volume is named `<stack>_<name with the ordinal>`; a fixed name would be one volume for every replica".into()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_stack;

    fn fields(yaml: &str) -> Vec<String> {
        match parse_stack("s", yaml) {
            Ok(_) => vec![],
            Err(e) => e.errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn two_replicas_writing_one_named_volume_are_refused_naming_the_volume() {
        let err = parse_stack(
            "s",
            "services: {db: {image: x, scale: 2, volumes: [\"/srv:/srv\", \"data:/d\"]}}\nvolumes: {data: {}}",
        )
        .unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert_eq!(err.errors[0].field, "services.db.volumes[1]");
        assert!(
            err.errors[0].reason.contains("\"data\""),
            "{}",
            err.errors[0].reason
        );
        assert_eq!(
            fields("services: {db: {image: x, deploy: {replicas: 3}, volumes: [{type: volume, source: data, target: /d}]}}\nvolumes: {data: {}}"),
            vec!["services.db.volumes[0]"]
        );
    }

    #[test]
    fn one_replica_read_only_mounts_shared_and_per_replica_volumes_are_fine() {
        for yaml in [
            "services: {db: {image: x, volumes: [\"data:/d\"]}}\nvolumes: {data: {}}",
            "services: {db: {image: x, scale: 3, volumes: [\"data:/d:ro\"]}}\nvolumes: {data: {}}",
            "services: {db: {image: x, scale: 3, volumes: [\"data:/d\"]}}\nvolumes: {data: {labels: {capstan.shared: \"true\"}}}",
            "services: {db: {image: x, scale: 3, volumes: [\"data-{{replica}}:/d\"]}}\nvolumes: {\"data-{{replica}}\": {}}",
            "services: {db: {image: x, scale: 3, volumes: [{type: volume, source: \"d{{replica}}\", target: /d}]}}\nvolumes: {\"d{{replica}}\": {}}",
        ] {
            assert_eq!(fields(yaml), Vec::<String>::new(), "{yaml}");
        }
    }

    #[test]
    fn a_per_replica_volume_must_be_declared_and_cannot_be_external_or_named() {
        assert_eq!(
            fields("services: {db: {image: x, scale: 2, volumes: [\"data-{{replica}}:/d\"]}}"),
            vec!["services.db.volumes[0]"]
        );
        assert_eq!(
            fields("services: {db: {image: x, volumes: [\"d-{{replica}}:/d\"]}}\nvolumes: {\"d-{{replica}}\": {external: true, name: fixed}}"),
            vec!["volumes.d-{{replica}}.external", "volumes.d-{{replica}}.name"]
        );
    }

    #[test]
    fn the_placeholder_becomes_the_ordinal() {
        assert_eq!(replica_volume("data-{{replica}}", 3), "data-3");
        assert_eq!(replica_volume("data", 3), "data");
        assert!(valid_volume_source("data-{{replica}}"));
        assert!(!valid_volume_source("{{replica}"));
    }
}
