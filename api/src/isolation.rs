//! Stacks are isolated from each other: the engine names one stack would create (containers
//! `<stack>-<service>-<n>`, networks and volumes `<stack>_<key>` or their `name:`) must not
//! be names another stack already owns. Names are joined with `-` and `_`, which names may
//! contain, so two stacks can spell the same engine name (`s6col` + service `a-web` and
//! `s6col-a` + `web`; stack `s6n` + network `a_default` and stack `s6n_a`'s default
//! network): such an apply is refused, naming the field and the other stack. External
//! networks and volumes are shared on purpose and never collide.
//!
//! Pure: [`collisions`] compares a spec with the stored stack records.

use std::collections::BTreeMap;

use crate::compose::FieldError;
use crate::names;
use crate::object::Stack;
use crate::spec::{NetworkSpec, StackSpec, VolumeSpec};

/// One engine object a stack owns: (kind, engine name) → the field that declares it.
type Owned = BTreeMap<(&'static str, String), String>;

fn owned(
    stack: &str,
    services: &[&str],
    networks: &BTreeMap<String, NetworkSpec>,
    volumes: &BTreeMap<String, VolumeSpec>,
) -> Owned {
    let mut out = Owned::new();
    for svc in services {
        let prefix = format!("{stack}-{svc}");
        out.insert(("container", prefix), format!("services.{svc}"));
    }
    let mut networks = networks.clone();
    networks
        .entry(names::DEFAULT_NETWORK.to_string())
        .or_default();
    for (key, net) in networks.iter().filter(|(_, n)| !n.external) {
        out.insert(
            ("network", net.engine_name(stack, key)),
            format!("networks.{key}"),
        );
    }
    for (key, vol) in volumes.iter().filter(|(_, v)| !v.external) {
        out.insert(
            ("volume", vol.engine_name(stack, key)),
            format!("volumes.{key}"),
        );
    }
    out
}

/// Every engine name `spec` would own that a stack in `others` owns already.
pub fn collisions(spec: &StackSpec, others: &[Stack]) -> Vec<FieldError> {
    let services: Vec<&str> = spec.services.keys().map(String::as_str).collect();
    let mine = owned(&spec.name, &services, &spec.networks, &spec.volumes);
    let mut out = vec![];
    for other in others.iter().filter(|o| o.name != spec.name) {
        let services: Vec<&str> = other.services.iter().map(String::as_str).collect();
        let theirs = owned(&other.name, &services, &other.networks, &other.volumes);
        for ((kind, name), field) in &mine {
            if let Some(their_field) = theirs.get(&(*kind, name.clone())) {
                out.push(FieldError {
                    field: field.clone(),
                    reason: format!(
                        "the {kind} name {name} belongs to stack {} ({their_field}); rename this one, or declare the {kind} `external` to share it on purpose",
                        other.name
                    ),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_stack;

    fn record(spec: &StackSpec) -> Stack {
        Stack {
            name: spec.name.clone(),
            services: spec.services.keys().cloned().collect(),
            networks: spec.networks.clone(),
            volumes: spec.volumes.clone(),
            ..Default::default()
        }
    }

    #[test]
    fn containers_of_two_stacks_cannot_share_a_name() {
        let a = parse_stack("s6col-a", "services: {web: {image: x}}").unwrap();
        let b = parse_stack("s6col", "services: {a-web: {image: x}}").unwrap();
        let errs = collisions(&b, &[record(&a)]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "services.a-web");
        assert!(
            errs[0].reason.contains("stack s6col-a"),
            "{}",
            errs[0].reason
        );
    }

    #[test]
    fn a_stack_cannot_join_another_stacks_network_by_spelling_its_name() {
        let a = parse_stack("s6n_a", "services: {web: {image: x}}").unwrap();
        let b = parse_stack(
            "s6n",
            "services: {web: {image: x, networks: [a_default]}}\nnetworks: {a_default: {}}",
        )
        .unwrap();
        let errs = collisions(&b, &[record(&a)]);
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["networks.a_default"]);
    }

    #[test]
    fn external_networks_and_volumes_are_shared_on_purpose() {
        let a = parse_stack(
            "shop",
            "services: {web: {image: x, volumes: [data:/d]}}\nvolumes: {data: {}}",
        )
        .unwrap();
        let b = parse_stack(
            "admin",
            "services: {ui: {image: x, networks: [shop], volumes: [data:/d]}}\nnetworks: {shop: {external: true, name: shop_default}}\nvolumes: {data: {external: true, name: shop_data}}",
        )
        .unwrap();
        assert_eq!(collisions(&b, &[record(&a)]), vec![]);
        assert_eq!(
            collisions(&a, &[record(&a)]),
            vec![],
            "a stack never collides with itself"
        );
    }

    #[test]
    fn a_named_volume_of_another_stack_is_refused() {
        let a = parse_stack(
            "shop",
            "services: {web: {image: x, volumes: [data:/d]}}\nvolumes: {data: {}}",
        )
        .unwrap();
        let b = parse_stack(
            "thief",
            "services: {web: {image: x, volumes: [loot:/d]}}\nvolumes: {loot: {name: shop_data}}",
        )
        .unwrap();
        let fields: Vec<String> = collisions(&b, &[record(&a)])
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, vec!["volumes.loot"]);
    }
}
