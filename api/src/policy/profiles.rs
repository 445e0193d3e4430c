//! Which profile each caller gets, and the policy file that says so.
//!
//! A caller who can already do anything through the Docker engine gains nothing from a
//! policy: root, and members of the group owning the engine's socket, on capstan's Unix
//! socket, get `privileged` by default. Every other caller (another user on the socket, a
//! token, a client certificate) gets `baseline` by default. The file given to
//! `capstan serve --policy` changes both, and tunes or adds profiles:
//!
//! ```yaml
//! socket: privileged         # socket callers who are root or in the engine socket's group
//! socket_others: baseline    # every other socket caller
//! roles:                     # tokens and client certificates, by role
//!   deploy: baseline
//!   admin: baseline
//! profiles:
//!   baseline:                # tunes a built-in profile: rules left out keep its values
//!     bind_mounts: [/srv, /data, /etc/pihole]
//!   ci:                      # a profile of the operator's, from a built-in one (default baseline)
//!     base: restricted
//!     max_replicas: 10
//! ```
//!
//! A token created with a profile (`capstan token create ci --role deploy --policy
//! restricted`) has that profile whatever its role says. Rules written at the top level, as
//! in a file of the single-policy days (`bind_mounts: [...]`, `ports: {...}`), tune
//! `baseline`, the profile such a file governed for every caller but the socket's
//! root and engine group; a file that wants those bound too says `socket: baseline`.
//!
//! A stack remembers the profile that admitted its last apply: the controller checks its
//! host paths again under that profile each time it makes a container ([`Profiles::for_stack`]).

use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::Policy;
use crate::compose::FieldError;
use crate::token::Role;

pub const PRIVILEGED: &str = "privileged";
pub const BASELINE: &str = "baseline";
pub const RESTRICTED: &str = "restricted";

/// The built-in profiles, from most to least allowed.
const BUILT_IN: [&str; 3] = [PRIVILEGED, BASELINE, RESTRICTED];

/// A caller as the profiles tell callers apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who<'a> {
    /// On the Unix socket: root, or in the group owning the engine's socket.
    EngineSocket,
    /// On the Unix socket: anyone else the socket's mode lets in.
    OtherSocket,
    /// A bearer token, with the profile it was created with, if any.
    Token {
        role: Role,
        profile: Option<&'a str>,
    },
    /// A verified client certificate.
    Certificate { role: Role },
}

/// A profile by name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile<'a> {
    pub name: &'a str,
    pub policy: &'a Policy,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    /// A token names a profile the policy file no longer defines.
    #[error("token profile {0:?} is not defined by the policy file (profiles: {1}); an operator can define it under `profiles:` in the file given to `capstan serve --policy`, or create the token again with a defined one")]
    UnknownTokenProfile(String, String),
}

/// Every profile, and who gets which.
#[derive(Clone, Debug, PartialEq)]
pub struct Profiles {
    profiles: BTreeMap<String, Policy>,
    socket: String,
    socket_others: String,
    roles: BTreeMap<Role, String>,
}

impl Default for Profiles {
    fn default() -> Self {
        let profiles = [
            (PRIVILEGED, Policy::privileged()),
            (BASELINE, Policy::baseline()),
            (RESTRICTED, Policy::restricted()),
        ];
        Profiles {
            profiles: (profiles.into_iter())
                .map(|(n, p)| (n.to_string(), p))
                .collect(),
            socket: PRIVILEGED.into(),
            socket_others: BASELINE.into(),
            roles: [Role::Read, Role::Deploy, Role::Admin]
                .into_iter()
                .map(|r| (r, BASELINE.to_string()))
                .collect(),
        }
    }
}

/// The keys of the file that are not rules.
const FILE_KEYS: [&str; 4] = ["profiles", "socket", "socket_others", "roles"];

impl Profiles {
    /// Reads a policy file (YAML, shape in the module's docs); what it leaves out keeps its
    /// default.
    pub fn from_yaml(text: &str) -> Result<Profiles, String> {
        if text.trim().is_empty() {
            return Ok(Profiles::default());
        }
        let mut file: Map<String, Value> =
            serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut out = Profiles::default();
        let profiles = match file.remove("profiles") {
            Some(Value::Object(map)) => map,
            Some(Value::Null) | None => Map::new(),
            Some(_) => return Err("profiles: a map of profile names to their rules".into()),
        };
        let callers: Map<String, Value> = (FILE_KEYS.iter())
            .filter_map(|k| file.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        if !file.is_empty() {
            if profiles.contains_key(BASELINE) {
                return Err("rules at the top level tune baseline, which `profiles: {baseline: ...}` tunes too: write them in one place".into());
            }
            let tuned = Policy::tuned(&out.profiles[BASELINE], file)?;
            out.profiles.insert(BASELINE.into(), tuned);
        }
        out.read_profiles(profiles)?;
        out.read_callers(callers)?;
        Ok(out)
    }

    /// `profiles:`: the built-in ones tuned first, then the operator's from them.
    fn read_profiles(&mut self, mut given: Map<String, Value>) -> Result<(), String> {
        for name in BUILT_IN {
            if let Some(rules) = given.remove(name) {
                let rules = rules_of(name, rules)?;
                if rules.contains_key("base") {
                    return Err(format!("profiles.{name}: a built-in profile has no `base`"));
                }
                let tuned = Policy::tuned(&self.profiles[name], rules)
                    .map_err(|e| format!("profiles.{name}: {e}"))?;
                self.profiles.insert(name.into(), tuned);
            }
        }
        let mut added = BTreeMap::new();
        for (name, rules) in given {
            if !valid_name(&name) {
                return Err(format!(
                    "profiles.{name}: a profile's name is lowercase letters, digits, '-' and '_'"
                ));
            }
            let mut rules = rules_of(&name, rules)?;
            let base = match rules.remove("base") {
                None => BASELINE.to_string(),
                Some(Value::String(b)) if BUILT_IN.contains(&b.as_str()) => b,
                Some(b) => {
                    return Err(format!(
                        "profiles.{name}.base: {b} is not one of privileged, baseline, restricted"
                    ))
                }
            };
            let policy = Policy::tuned(&self.profiles[&base], rules)
                .map_err(|e| format!("profiles.{name}: {e}"))?;
            added.insert(name, policy);
        }
        self.profiles.extend(added);
        Ok(())
    }

    /// `socket:`, `socket_others:` and `roles:`, each naming a defined profile.
    fn read_callers(&mut self, given: Map<String, Value>) -> Result<(), String> {
        for (key, value) in given {
            match (key.as_str(), value) {
                ("socket", Value::String(p)) => self.socket = self.defined(&key, p)?,
                ("socket_others", Value::String(p)) => {
                    self.socket_others = self.defined(&key, p)?
                }
                ("roles", Value::Object(roles)) => {
                    for (role, p) in roles {
                        let field = format!("roles.{role}");
                        let Some(r) = Role::parse(&role) else {
                            return Err(format!("{field}: roles are read, deploy and admin"));
                        };
                        let Value::String(p) = p else {
                            return Err(format!("{field}: a profile's name"));
                        };
                        self.roles.insert(r, self.defined(&field, p)?);
                    }
                }
                (_, _) => {
                    return Err(format!(
                        "{key}: a profile's name (roles: a map of role to profile)"
                    ))
                }
            }
        }
        Ok(())
    }

    fn defined(&self, field: &str, name: String) -> Result<String, String> {
        if self.profiles.contains_key(&name) {
            return Ok(name);
        }
        Err(format!(
            "{field}: profile {name:?} is not defined (profiles: {})",
            self.names()
        ))
    }

    /// The profile called `name`, if defined.
    pub fn get(&self, name: &str) -> Option<Profile<'_>> {
        let (name, policy) = self.profiles.get_key_value(name)?;
        Some(Profile { name, policy })
    }

    /// The names of the profiles, comma-separated.
    pub fn names(&self) -> String {
        self.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    /// The profile in force for `who`.
    pub fn profile_for(&self, who: &Who) -> Result<Profile<'_>, ProfileError> {
        let name = match who {
            Who::EngineSocket => &self.socket,
            Who::OtherSocket => &self.socket_others,
            Who::Token {
                profile: Some(p), ..
            } => {
                return self
                    .get(p)
                    .ok_or_else(|| ProfileError::UnknownTokenProfile(p.to_string(), self.names()))
            }
            Who::Token { role, .. } | Who::Certificate { role } => &self.roles[role],
        };
        Ok(self
            .get(name)
            .expect("the file's callers name defined profiles"))
    }

    /// The profile under which the controller checks a stack's host paths again: the one
    /// that admitted its last apply, or `baseline` when the stack does not say (applied
    /// before profiles) or names one the file no longer defines.
    pub fn for_stack(&self, recorded: Option<&str>) -> Profile<'_> {
        (recorded.and_then(|name| self.get(name)))
            .unwrap_or_else(|| self.get(BASELINE).expect("baseline is built in"))
    }
}

fn rules_of(name: &str, rules: Value) -> Result<Map<String, Value>, String> {
    match rules {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(format!("profiles.{name}: a map of rules")),
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && (name.chars()).all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_".contains(c))
}

impl Policy {
    /// `base` with each rule of `rules` replaced (a rule is replaced whole: a list is not
    /// merged). An unknown rule, a value of the wrong shape or an empty port range is an
    /// error.
    pub fn tuned(base: &Policy, rules: Map<String, Value>) -> Result<Policy, String> {
        let Ok(Value::Object(mut all)) = serde_json::to_value(base) else {
            unreachable!("a policy is a map of rules")
        };
        for (rule, value) in rules {
            if !all.contains_key(&rule) {
                let known: Vec<&str> = all.keys().map(String::as_str).collect();
                return Err(format!(
                    "unknown rule `{rule}` (rules: {})",
                    known.join(", ")
                ));
            }
            all.insert(rule, value);
        }
        let policy: Policy =
            serde_json::from_value(Value::Object(all)).map_err(|e| e.to_string())?;
        if policy.ports.min > policy.ports.max {
            return Err(format!(
                "ports: min {} is above max {}",
                policy.ports.min, policy.ports.max
            ));
        }
        Ok(policy)
    }
}

/// The profile a refusal was made under, and by whom: what each refusal's reason names,
/// with how an operator changes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InForce {
    pub profile: String,
    /// The caller as a person reads it: `token "ci"`, `socket uid 1000`.
    pub caller: String,
    /// How an operator gives this caller another profile.
    pub grant: String,
}

impl InForce {
    pub fn new(profile: &Profile, who: &Who, caller: impl std::fmt::Display) -> InForce {
        let p = profile.name;
        let file = "in the file given to `capstan serve --policy`";
        let tune = format!("tune profile {p}'s rules under `profiles: {{{p}: ...}}`");
        let grant = match who {
            Who::EngineSocket => format!("an operator can set `socket:` (root and the engine's group on the socket) or {tune} {file}"),
            Who::OtherSocket => format!("an operator can set `socket_others:` (other socket users) or {tune} {file}"),
            Who::Token { profile: Some(_), role } => format!("an operator can create a token with another profile (`capstan token create NAME --role {} --policy PROFILE`) or {tune} {file}", role.name()),
            Who::Token { role, profile: None } => format!("an operator can grant a profile with `capstan token create NAME --role {r} --policy PROFILE`, set `roles: {{{r}: PROFILE}}` or {tune} {file}", r = role.name()),
            Who::Certificate { role } => format!("an operator can set `roles: {{{r}: PROFILE}}` or {tune} {file}", r = role.name()),
        };
        InForce {
            profile: p.to_string(),
            caller: caller.to_string(),
            grant,
        }
    }

    /// Each policy refusal among `errors` (`policy rule RULE: why`) naming the profile and
    /// the caller, and saying how to change it; other errors as they are.
    pub fn attribute(&self, errors: Vec<FieldError>) -> Vec<FieldError> {
        let attribute = |reason: String| {
            let Some((rule, why)) =
                (reason.strip_prefix("policy rule ")).and_then(|rest| rest.split_once(": "))
            else {
                return reason;
            };
            format!(
                "policy rule {rule} (profile {}, caller {}): {why}; {}",
                self.profile, self.caller, self.grant
            )
        };
        (errors.into_iter())
            .map(|e| FieldError {
                field: e.field,
                reason: attribute(e.reason),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_stack;

    fn rules(profiles: &Profiles, who: Who, yaml: &str) -> Vec<String> {
        let spec = parse_stack("s", yaml).unwrap();
        let profile = profiles.profile_for(&who).unwrap();
        (profile.policy.check(&spec).into_iter())
            .map(|e| {
                e.reason["policy rule ".len()..]
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    const TRAEFIK: &str = "services: {traefik: {image: traefik, ports: ['80:80'], volumes: ['/var/run/docker.sock:/var/run/docker.sock']}}";

    #[test]
    fn socket_callers_who_reach_the_engine_get_privileged_and_every_other_caller_baseline() {
        let p = Profiles::default();
        let name = |who| p.profile_for(&who).unwrap().name;
        assert_eq!(name(Who::EngineSocket), "privileged");
        assert_eq!(name(Who::OtherSocket), "baseline");
        let deploy = Who::Token {
            role: Role::Deploy,
            profile: None,
        };
        assert_eq!(name(deploy), "baseline");
        assert_eq!(name(Who::Certificate { role: Role::Admin }), "baseline");
        let restricted = Who::Token {
            role: Role::Deploy,
            profile: Some("restricted"),
        };
        assert_eq!(name(restricted), "restricted");
    }

    #[test]
    fn privileged_takes_traefiks_shape_and_baseline_refuses_only_its_socket() {
        let p = Profiles::default();
        assert_eq!(rules(&p, Who::EngineSocket, TRAEFIK), Vec::<String>::new());
        assert_eq!(rules(&p, Who::OtherSocket, TRAEFIK), vec!["bind_mounts"]);
    }

    #[test]
    fn privileged_allows_what_docker_compose_up_may_do() {
        let yaml = "services: {web: {image: x, privileged: true, network_mode: host, cap_add: [SYS_ADMIN],
            pid: host, ipc: host, uts: host, userns_mode: host, cgroup: host, device_cgroup_rules: ['a *:* rwm'],
            post_start: [{command: id, privileged: true}],
            devices: ['/dev/sda:/dev/sda'], security_opt: ['seccomp:unconfined'], sysctls: {kernel.shmmax: 1},
            volumes: ['/:/host', '/run:/run', 'disk:/d']}}
volumes: {disk: {driver: local-persist, driver_opts: {type: ext4, device: /dev/sdb1}}, proc: {driver_opts: {type: proc, device: proc}}}
networks: {lan: {driver: macvlan}}";
        let p = Profiles::default();
        assert_eq!(rules(&p, Who::EngineSocket, yaml), Vec::<String>::new());
    }

    #[test]
    fn restricted_refuses_every_bind_and_a_user_that_may_be_root() {
        let p = Profiles::default();
        let who = Who::Token {
            role: Role::Deploy,
            profile: Some("restricted"),
        };
        let bind = "services: {web: {image: x, user: '1000', volumes: ['/srv/data:/d']}}";
        assert_eq!(rules(&p, who, bind), vec!["bind_mounts"]);
        for user in [
            "",
            "user: root,",
            "user: '0',",
            "user: '0:1000',",
            "user: nobody,",
        ] {
            let yaml = format!(
                "services: {{web: {{image: x, {user} volumes: ['v:/v']}}}}\nvolumes: {{v: {{}}}}"
            );
            assert_eq!(rules(&p, who, &yaml), vec!["run_as_non_root"], "{user}");
        }
        for user in ["'1000'", "'1000:0'", "'65534:65534'"] {
            let yaml = format!("services: {{web: {{image: x, user: {user}, ports: ['80:80']}}}}");
            assert_eq!(rules(&p, who, &yaml), Vec::<String>::new(), "{user}");
        }
    }

    #[test]
    fn a_refusal_names_the_rule_the_profile_the_caller_and_how_to_change_it() {
        let p = Profiles::default();
        let who = Who::Token {
            role: Role::Deploy,
            profile: None,
        };
        let profile = p.profile_for(&who).unwrap();
        let spec = parse_stack("s", TRAEFIK).unwrap();
        let in_force = InForce::new(&profile, &who, "token \"ci\"");
        let errors = in_force.attribute(profile.policy.check(&spec));
        assert_eq!(errors.len(), 1);
        let reason = &errors[0].reason;
        assert!(
            reason.starts_with("policy rule bind_mounts (profile baseline, caller token \"ci\"): /var/run/docker.sock reaches"),
            "{reason}"
        );
        assert!(
            reason.contains("capstan token create NAME --role deploy --policy PROFILE"),
            "{reason}"
        );
        assert!(reason.contains("roles: {deploy: PROFILE}"), "{reason}");
    }

    #[test]
    fn a_file_sets_each_callers_profile_and_tunes_or_adds_profiles() {
        let p = Profiles::from_yaml(
            "socket: baseline\nsocket_others: restricted\nroles: {deploy: ci}
profiles:
  baseline: {bind_mounts: [/etc/pihole]}
  ci: {base: restricted, max_replicas: 2}",
        )
        .unwrap();
        let name = |who| p.profile_for(&who).unwrap().name;
        assert_eq!(name(Who::EngineSocket), "baseline");
        assert_eq!(name(Who::OtherSocket), "restricted");
        let deploy = Who::Token {
            role: Role::Deploy,
            profile: None,
        };
        assert_eq!(name(deploy), "ci");
        assert_eq!(name(Who::Certificate { role: Role::Read }), "baseline");
        let ci = p.get("ci").unwrap().policy;
        assert_eq!((ci.max_replicas, ci.run_as_non_root), (2, true));
        let baseline = p.get("baseline").unwrap().policy;
        assert_eq!(baseline.bind_mounts, vec!["/etc/pihole"]);
        assert_eq!(
            baseline.cap_add,
            Policy::baseline().cap_add,
            "left out: kept"
        );
    }

    #[test]
    fn top_level_rules_of_a_single_policy_file_tune_baseline() {
        let p = Profiles::from_yaml("ports: {min: 1024, max: 65535}\nbind_mounts: [/srv]").unwrap();
        let baseline = p.get("baseline").unwrap().policy;
        assert_eq!(
            (baseline.ports.min, baseline.bind_mounts.clone()),
            (1024, vec!["/srv".to_string()])
        );
        assert_eq!(p.get("privileged").unwrap().policy, &Policy::privileged());
        assert_eq!(Profiles::from_yaml("").unwrap(), Profiles::default());
    }

    #[test]
    fn a_file_naming_an_undefined_profile_an_unknown_rule_or_key_is_an_error() {
        for bad in [
            "socket: root",
            "roles: {deploy: nosuch}",
            "roles: {owner: baseline}",
            "privilegd: true",
            "profiles: {ci: {privilegd: true}}",
            "profiles: {ci: {base: ci}}",
            "profiles: {baseline: {base: privileged}}",
            "profiles: {Bad: {}}",
            "ports: {min: 2000, max: 1000}",
            "bind_mounts: [/srv]\nprofiles: {baseline: {}}",
        ] {
            assert!(Profiles::from_yaml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_whose_profile_is_gone_is_an_error_and_a_stack_falls_back_to_baseline() {
        let p = Profiles::default();
        let who = Who::Token {
            role: Role::Deploy,
            profile: Some("gone"),
        };
        assert!(matches!(
            p.profile_for(&who),
            Err(ProfileError::UnknownTokenProfile(..))
        ));
        assert_eq!(p.for_stack(Some("gone")).name, "baseline");
        assert_eq!(p.for_stack(None).name, "baseline");
        assert_eq!(p.for_stack(Some("privileged")).name, "privileged");
    }
}
