//! Refused Compose files: every Compose key capstan refuses is refused by its field path and a reason, and
//! a refused file changes nothing: etcd's revision is the same before and after, no stack is
//! listed, no container exists. One small file per refused key, one daemon for all of them.
//! A dry run of an invalid file names every error; a valid apply says, in `notice:` lines,
//! where capstan's meaning differs from Compose's.
//!
//! Names and values the engine would take literally (a network named `S_../../x`, or with a
//! newline) or refuse late (a NUL, a 300-character hostname, a bad image reference) are
//! field errors at apply and dry run too; what apply cannot know (a volume driver that does
//! not exist) is named in the status of the services that need it.
//!
//! Keys the engine of this machine is too old for (`annotations`, `mac_address`,
//! `volume.subpath`) are accepted at apply and refused at create: the service's status names
//! the key and the API version it needs, and the rest of the stack runs.
//!
//! A file with several errors sent to the raw API is a 400 naming each field path, the client
//! refuses it too, and nothing reaches etcd.

use capstan_e2e::*;
use std::time::Duration;

/// (refused key, Compose file, the field path the error must name). `{IMAGE}` is the test
/// image. Each file is otherwise valid.
const REFUSED: &[(&str, &str, &str)] = &[
    ("build.ssh", "services: {web: {image: {IMAGE}, build: {context: ., ssh: [default]}}}", "services.web.build.ssh"),
    ("build.secrets", "services: {web: {image: {IMAGE}, build: {context: ., secrets: [npm_token]}}}", "services.web.build.secrets"),
    ("build.cache_from", "services: {web: {image: {IMAGE}, build: {context: ., cache_from: [example.org/web:cache]}}}", "services.web.build.cache_from"),
    ("build.cache_to", "services: {web: {image: {IMAGE}, build: {context: ., cache_to: ['type=local,dest=/tmp/c']}}}", "services.web.build.cache_to"),
    ("build.platforms", "services: {web: {image: {IMAGE}, build: {context: ., platforms: [linux/arm64]}}}", "services.web.build.platforms"),
    ("build.additional_contexts", "services: {web: {image: {IMAGE}, build: {context: ., additional_contexts: {assets: ./assets}}}}", "services.web.build.additional_contexts"),
    ("build.entitlements", "services: {web: {image: {IMAGE}, build: {context: ., entitlements: [network.host]}}}", "services.web.build.entitlements"),
    ("build.privileged", "services: {web: {image: {IMAGE}, build: {context: ., privileged: true}}}", "services.web.build.privileged"),
    ("build.isolation", "services: {web: {image: {IMAGE}, build: {context: ., isolation: default}}}", "services.web.build.isolation"),
    ("build.ulimits", "services: {web: {image: {IMAGE}, build: {context: ., ulimits: {nofile: 1024}}}}", "services.web.build.ulimits"),
    ("attach", "services: {web: {image: {IMAGE}, attach: false}}", "services.web.attach"),
    ("credential_spec", "services: {web: {image: {IMAGE}, credential_spec: {file: spec.json}}}", "services.web.credential_spec"),
    ("develop", "services: {web: {image: {IMAGE}, develop: {watch: [{path: ./src, action: sync, target: /app}]}}}", "services.web.develop"),
    ("driver_opts", "services: {web: {image: {IMAGE}, driver_opts: {a: b}}}", "services.web.driver_opts"),
    ("gpus", "services: {web: {image: {IMAGE}, gpus: all}}", "services.web.gpus"),
    ("isolation", "services: {web: {image: {IMAGE}, isolation: default}}", "services.web.isolation"),
    ("provider", "services: {web: {image: {IMAGE}, provider: {type: model, options: {model: ai/x}}}}", "services.web.provider"),
    ("pull_policy (an unknown value)", "services: {web: {image: {IMAGE}, pull_policy: sometimes}}", "services.web.pull_policy"),
    ("use_api_socket", "services: {web: {image: {IMAGE}, use_api_socket: true}}", "services.web.use_api_socket"),
    ("models", "services: {web: {image: {IMAGE}, models: [llm]}}", "services.web.models"),
    ("label_file", "services: {web: {image: {IMAGE}, label_file: ./web.labels}}", "services.web.label_file"),
    ("services.*.configs: an undeclared config", "services: {web: {image: {IMAGE}, configs: [site]}}", "services.web.configs[0]"),
    ("services.*.secrets: an undeclared secret", "services: {web: {image: {IMAGE}, secrets: [password]}}", "services.web.secrets[0]"),
    ("secrets.*.external (Swarm)", "services: {web: {image: {IMAGE}}}\nsecrets: {password: {external: true}}", "secrets.password.external"),
    ("configs.*.external (Swarm)", "services: {web: {image: {IMAGE}}}\nconfigs: {site: {external: true}}", "configs.site.external"),
    ("secrets.*.driver (Swarm)", "services: {web: {image: {IMAGE}}}\nsecrets: {pw: {environment: HOME, driver: vault}}", "secrets.pw.driver"),
    ("secrets.*.driver_opts (Swarm)", "services: {web: {image: {IMAGE}}}\nsecrets: {pw: {environment: HOME, driver_opts: {path: db}}}", "secrets.pw.driver_opts"),
    ("secrets.*.labels (Swarm)", "services: {web: {image: {IMAGE}}}\nsecrets: {pw: {environment: HOME, labels: {team: core}}}", "secrets.pw.labels"),
    ("secrets.*.template_driver (Swarm)", "services: {web: {image: {IMAGE}}}\nsecrets: {pw: {environment: HOME, template_driver: golang}}", "secrets.pw.template_driver"),
    ("configs.*.labels (Swarm)", "services: {web: {image: {IMAGE}}}\nconfigs: {site: {content: x, labels: [team=core]}}", "configs.site.labels"),
    ("configs.*.template_driver (Swarm)", "services: {web: {image: {IMAGE}}}\nconfigs: {site: {content: x, template_driver: golang}}", "configs.site.template_driver"),
    ("configs.*.file: a missing file", "services: {web: {image: {IMAGE}}}\nconfigs: {site: {file: ./site.conf}}", "configs.site.file"),
    ("secrets.*.mode: not octal", "services: {web: {image: {IMAGE}, secrets: [{source: pw, mode: rw}]}}\nsecrets: {pw: {environment: HOME}}", "services.web.secrets[0].mode"),
    ("models (top level)", "services: {web: {image: {IMAGE}}}\nmodels: {llm: {model: ai/x}}", "models"),
    ("deploy.placement", "services: {web: {image: {IMAGE}, deploy: {placement: {constraints: [node.role==manager]}}}}", "services.web.deploy.placement"),
    ("deploy.endpoint_mode", "services: {web: {image: {IMAGE}, deploy: {endpoint_mode: vip}}}", "services.web.deploy.endpoint_mode"),
    ("deploy.resources.reservations.cpus", "services: {web: {image: {IMAGE}, deploy: {resources: {reservations: {cpus: '0.5'}}}}}", "services.web.deploy.resources.reservations.cpus"),
    ("deploy.resources.reservations.generic_resources", "services: {web: {image: {IMAGE}, deploy: {resources: {reservations: {generic_resources: [{discrete_resource_spec: {kind: gpu, value: 2}}]}}}}}", "services.web.deploy.resources.reservations.generic_resources"),
    ("deploy.resources.reservations.devices", "services: {web: {image: {IMAGE}, deploy: {resources: {reservations: {devices: [{capabilities: [gpu]}]}}}}}", "services.web.deploy.resources.reservations.devices"),
    ("volumes[].type: npipe", "services: {web: {image: {IMAGE}, volumes: [{type: npipe, source: //./pipe/x, target: /x}]}}", "services.web.volumes[0].type"),
    ("network_mode: service: of no service", "services: {web: {image: {IMAGE}, network_mode: 'service:gone'}, db: {image: {IMAGE}}}", "services.web.network_mode"),
    ("volumes[].type: cluster", "services: {web: {image: {IMAGE}, volumes: [{type: cluster, source: shared, target: /x}]}}", "services.web.volumes[0].type"),
    ("volumes[].type: image", "services: {web: {image: {IMAGE}, volumes: [{type: image, source: {IMAGE}, target: /x}]}}", "services.web.volumes[0].type"),
    ("networks.*.enable_ipv4", "services: {web: {image: {IMAGE}}}\nnetworks: {default: {enable_ipv4: true}}", "networks.default.enable_ipv4"),
    ("services.*.networks.*.gw_priority", "services: {web: {image: {IMAGE}, networks: {default: {gw_priority: 1}}}}", "services.web.networks.default.gw_priority"),
    ("services.*.networks.*.mac_address", "services: {web: {image: {IMAGE}, networks: {default: {mac_address: '02:42:ac:11:00:42'}}}}", "services.web.networks.default.mac_address"),
    ("services.*.networks.*.driver_opts", "services: {web: {image: {IMAGE}, networks: {default: {driver_opts: {com.example.opt: x}}}}}", "services.web.networks.default.driver_opts"),
    ("services.*.networks.*.interface_name", "services: {web: {image: {IMAGE}, networks: {default: {interface_name: eth7}}}}", "services.web.networks.default.interface_name"),
    ("include entry key", "include: [{path: other.yaml, extra: 1}]\nservices: {web: {image: {IMAGE}}}", "include[0].extra"),
    ("a key Compose does not have", "services: {web: {image: {IMAGE}, imgae: typo}}", "services.web.imgae"),
];

/// Keys `capstan apply` resolves on the client: a document sent straight to the API with
/// them is refused, by field path.
const CLIENT_SIDE: &[(&str, &str, &str)] = &[
    (
        "extends",
        "services: {web: {image: {IMAGE}, extends: base}, base: {image: {IMAGE}}}",
        "services.web.extends",
    ),
    (
        "profiles",
        "services: {web: {image: {IMAGE}, profiles: [debug]}}",
        "services.web.profiles",
    ),
    (
        "env_file",
        "services: {web: {image: {IMAGE}, env_file: app.env}}",
        "services.web.env_file",
    ),
    (
        "include",
        "include: [other.yaml]\nservices: {web: {image: {IMAGE}}}",
        "include",
    ),
    (
        // A secret's or config's `file` (the reason names the key and says who reads it).
        "file",
        "services: {web: {image: {IMAGE}}}\nsecrets: {pw: {file: ./pw.txt}}",
        "secrets.pw.file",
    ),
];

/// Nothing of `stack` exists anywhere: not in etcd, not in the API, not on the engine.
fn nothing_stored(h: &Harness, revision: u64, key: &str) -> Result<(), String> {
    let after = h.etcd.revision();
    if after != revision {
        return Err(format!(
            "{key}: etcd changed: revision {revision} → {after}"
        ));
    }
    let stacks = h.d.cli_ok(&["get", "stacks", "-o", "json"]);
    if stacks.contains(&h.s.name) {
        return Err(format!("{key}: a stack is listed: {stacks}"));
    }
    if !h.s.containers().is_empty() {
        return Err(format!("{key}: containers exist: {:?}", h.s.containers()));
    }
    Ok(())
}

#[test]
fn every_refused_key_is_named_by_its_field_path_and_leaves_etcd_unchanged() {
    let h = Harness::start("refusals");
    let mut wrong = vec![];
    for (key, yaml, field) in REFUSED {
        let file = h.s.file(&yaml.replace("{IMAGE}", IMAGE));
        let revision = h.etcd.revision();
        let out = h.d.cli(&["apply", "-f", &file, "--stack", &h.s.name]);
        let err = String::from_utf8_lossy(&out.stderr);
        let reason = err
            .lines()
            .find_map(|l| l.strip_prefix(&format!("  {field}: ")))
            .unwrap_or_default();
        if out.status.success() {
            wrong.push(format!("{key}: apply succeeded"));
        } else if reason.trim().is_empty() {
            wrong.push(format!(
                "{key}: no error names {field} with a reason:\n{err}"
            ));
        }
        if let Err(e) = nothing_stored(&h, revision, key) {
            wrong.push(e);
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} refusals are wrong:\n{}",
        wrong.len(),
        REFUSED.len(),
        wrong.join("\n")
    );
}

/// Sends `yaml` straight to the API (`PUT /v1/stacks/{stack}`, as `capstan apply` would after
/// resolving): it must be a 400 naming `field` with a reason that contains every one of
/// `words`, and leave etcd as it was.
fn refused_over_the_raw_api(
    h: &Harness,
    yaml: &str,
    field: &str,
    words: &[&str],
) -> Result<(), String> {
    let revision = h.etcd.revision();
    let resp = (h.d.api())
        .put(format!("{API}/v1/stacks/{}", h.s.name))
        .header("content-type", "application/yaml")
        .body(yaml.replace("{IMAGE}", IMAGE))
        .send()
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().unwrap_or_default();
    let named = body["details"].as_array().is_some_and(|ds| {
        ds.iter().any(|d| {
            d["field"] == *field
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| words.iter().all(|w| r.contains(w)))
        })
    });
    if status != reqwest::StatusCode::BAD_REQUEST || !named {
        return Err(format!("{field}: {status} {body}"));
    }
    nothing_stored(h, revision, field)
}

#[test]
fn keys_resolved_by_the_client_are_refused_over_the_raw_api_by_field_path() {
    let h = Harness::start("raw-refusals");
    let wrong: Vec<String> = CLIENT_SIDE
        .iter()
        .filter_map(|(key, yaml, field)| {
            refused_over_the_raw_api(&h, yaml, field, &[key, "capstan apply"]).err()
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The client's YAML reader expands merge keys; a document sent to the API as JSON can still
/// hold a `"<<"` key, which is then named, not ignored (and the missing `image` it did not
/// bring says so).
#[test]
fn an_unexpanded_merge_key_sent_to_the_raw_api_is_refused_by_field_path() {
    let h = Harness::start("raw-merge-key");
    let wrong: Vec<String> = [
        (
            r#"{"services": {"web": {"image": "{IMAGE}", "<<": "base"}}}"#,
            "services.web.<<",
            "merge key that was not expanded",
        ),
        (
            r#"{"services": {"web": {"<<": "base"}}}"#,
            "services.web.image",
            "merge key `<<` was not expanded",
        ),
    ]
    .iter()
    .filter_map(|(json, field, words)| refused_over_the_raw_api(&h, json, field, &[words]).err())
    .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The names and values the engine would take literally or refuse late (issue: names and
/// values are checked at apply): (what, Compose file, the field path the error must name, a
/// word its reason must hold). `{IMAGE}` is the test image; each file is otherwise valid.
fn bad_names() -> Vec<(&'static str, String, String, &'static str)> {
    let long = "n".repeat(100);
    let base = "services: {web: {image: {IMAGE}}}";
    vec![
        ("a network key going up folders", format!("{base}\nnetworks: {{\"../../x\": {{}}}}"), "networks.../../x".into(), "letter or digit"),
        ("a network key with an accent", format!("{base}\nnetworks: {{\"wéb\": {{}}}}"), "networks.wéb".into(), "'é'"),
        ("a network key of 100 characters", format!("{base}\nnetworks: {{{long}: {{}}}}"), format!("networks.{long}"), "63"),
        ("a network name with a newline", format!("{base}\nnetworks: {{n: {{name: \"bad\\nname\"}}}}"), "networks.n.name".into(), "U+000A"),
        ("a network name with a slash", format!("{base}\nnetworks: {{n: {{name: \"a/b\"}}}}"), "networks.n.name".into(), "'/'"),
        ("a volume name going up folders", "services: {web: {image: {IMAGE}, volumes: [\"data:/d\"]}}\nvolumes: {data: {name: \"../../etc\"}}".into(), "volumes.data.name".into(), "letter or digit"),
        ("an environment value with a NUL", "services: {web: {image: {IMAGE}, environment: {A: \"a\\0b\"}}}".into(), "services.web.environment.A".into(), "NUL"),
        ("a command argument with a NUL", "services: {web: {image: {IMAGE}, command: [\"a\\0b\"]}}".into(), "services.web.command[0]".into(), "NUL"),
        ("an image ending in a newline", "services: {web: {image: \"{IMAGE}\\n\"}}".into(), "services.web.image".into(), "U+000A"),
        ("an image with an escape sequence", "services: {web: {image: \"web\\e[31m:1\"}}".into(), "services.web.image".into(), "ESC"),
        ("an image with an uppercase path", "services: {web: {image: \"Capstan/Web:1\"}}".into(), "services.web.image".into(), "lowercase"),
        ("a hostname of 300 characters", format!("services: {{web: {{image: {{IMAGE}}, hostname: {}}}}}", "h".repeat(300)), "services.web.hostname".into(), "64"),
        ("a hostname with a space", "services: {web: {image: {IMAGE}, hostname: \"web 1\"}}".into(), "services.web.hostname".into(), "letters, digits"),
        // The path shows the newline escaped, never as it is.
        ("a label key with a newline", "services: {web: {image: {IMAGE}, labels: {\"a\\nb\": \"1\"}}}".into(), "services.web.labels.a\\nb".into(), "U+000A"),
        ("an alias with a tab", "services: {web: {image: {IMAGE}, networks: {default: {aliases: [\"a\\tb\"]}}}}".into(), "services.web.networks.default.aliases[0]".into(), "U+0009"),
        ("a one-character container name", "services: {web: {image: {IMAGE}, container_name: w}}".into(), "services.web.container_name".into(), "two"),
    ]
}

/// Every bad name or value is refused by field path and reason over the raw API, by
/// `capstan apply`, and by `capstan apply --dry-run`, and none of them writes anything.
#[test]
fn every_bad_name_or_engine_value_is_named_by_its_field_path_at_apply_and_dry_run() {
    let h = Harness::start("bad-names");
    let mut wrong = vec![];
    for (what, yaml, field, word) in bad_names() {
        if let Err(e) = refused_over_the_raw_api(&h, &yaml, &field, &[word]) {
            wrong.push(format!("{what} (API): {e}"));
        }
        let file = h.s.file(&yaml.replace("{IMAGE}", IMAGE));
        for dry in [false, true] {
            let revision = h.etcd.revision();
            let mut args = vec!["apply", "-f", &file, "--stack", &h.s.name];
            if dry {
                args.push("--dry-run");
            }
            let out = h.d.cli(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            let named = err.lines().any(|l| {
                l.strip_prefix(&format!("  {field}: "))
                    .is_some_and(|r| r.contains(word))
            });
            if out.status.success() || !named {
                wrong.push(format!(
                    "{what} (apply, dry run {dry}): no error names {field} with {word:?}:\n{err}"
                ));
            }
            if let Err(e) = nothing_stored(&h, revision, what) {
                wrong.push(e);
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// What apply cannot know: the engine refuses to make a volume (its driver does not exist)
/// or finds no external network. The services that need them are not left `Pending`
/// without a word: their status names the resource and gives the engine's words, and the
/// rest of the stack runs. The operator's policy allows the driver (a plugin it meant to
/// install), so the refusal is the engine's.
#[test]
fn a_volume_or_network_the_engine_refuses_is_named_in_the_status_of_the_services_needing_it() {
    let policy = std::env::temp_dir().join(format!("refused-resource-{}.yaml", std::process::id()));
    std::fs::write(&policy, "volume_drivers: [local, nosuchdriver]\n").unwrap();
    let h = Harness::start_with("refused-resource", &["--policy", policy.to_str().unwrap()]);
    let _ = std::fs::remove_file(&policy);
    let (d, s) = (&h.d, &h.s);
    let missing = format!("{}-nonet", s.name);
    d.apply_nowait(
        s,
        &format!(
            r#"
services:
  db:
    image: {IMAGE}
    volumes: ["data:/data"]
  edge:
    image: {IMAGE}
    networks: [outside]
  plain:
    image: {IMAGE}
volumes:
  data: {{driver: nosuchdriver}}
networks:
  outside: {{external: true, name: {missing}}}
"#
        ),
    );
    let timeout = Duration::from_secs(90);
    wait_until(
        timeout,
        "the service needing nothing refused to run",
        || d.converged(&s.name, "plain", 1),
    );
    let volume = format!("volume {}_data", s.name);
    for (service, reason, words) in [
        ("db", "ResourceRefused", [volume.as_str(), "nosuchdriver"]),
        ("edge", "ExternalMissing", [missing.as_str(), "network"]),
    ] {
        wait_until(timeout, &format!("{service}'s status to say why"), || {
            let svc = d.service(&s.name, service);
            svc["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Ready"
                        && c["reason"] == reason
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| words.iter().all(|w| m.contains(w)))
                })
            })
        });
    }
    assert!(
        !s.containers()
            .iter()
            .any(|(name, _, _)| *name == s.replica("db", 1)),
        "no replica of db is made without its volume"
    );
}

/// Docker API versions as numbers: `1.41` → (1, 41).
fn api_version() -> (u32, u32) {
    let v = docker(&["version", "-f", "{{.Server.APIVersion}}"]);
    let (major, minor) = v.trim().split_once('.').expect("a Docker API version");
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn keys_newer_than_the_engine_are_refused_at_create_in_the_status_and_the_rest_runs() {
    let h = Harness::start("too-new-keys");
    let (d, s) = (&h.d, &h.s);
    const IDLE: &str = r#"["sh", "-c", "trap 'exit 0' TERM INT; while true; do sleep 1; done"]"#;
    d.apply_nowait(
        s,
        &format!(
            r#"
services:
  annotated:
    image: {IMAGE}
    command: {IDLE}
    annotations: {{com.example.team: core}}
  fixed-mac:
    image: {IMAGE}
    command: {IDLE}
    mac_address: "02:42:ac:11:00:99"
  subpathed:
    image: {IMAGE}
    command: {IDLE}
    volumes:
      - {{type: volume, source: data, target: /data, volume: {{subpath: app}}}}
  plain:
    image: {IMAGE}
volumes:
  data: {{}}
"#
        ),
    );
    let api = api_version();
    let timeout = Duration::from_secs(90);
    wait_until(timeout, "the service without new keys to run", || {
        d.converged(&s.name, "plain", 1)
    });
    for (service, key, needs) in [
        ("annotated", "`annotations`", (1, 43)),
        ("fixed-mac", "`mac_address`", (1, 44)),
        ("subpathed", "`volume.subpath`", (1, 45)),
    ] {
        if api >= needs {
            wait_until(timeout, &format!("{service} to run"), || {
                d.converged(&s.name, service, 1)
            });
            continue;
        }
        let text = format!("{}.{}", needs.0, needs.1);
        wait_until(
            timeout,
            &format!("{service}'s status to name {key}"),
            || {
                let svc = d.service(&s.name, service);
                svc["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains(key) && m.contains(&text))
                    })
                })
            },
        );
        let replica = s.replica(service, 1);
        assert!(
            !s.containers().iter().any(|(name, _, _)| *name == replica),
            "nothing half-made of {service} is left"
        );
    }
    assert!(
        d.converged(&s.name, "plain", 1),
        "the rest of the stack still runs"
    );
}

#[test]
fn a_dry_run_of_an_invalid_file_exits_non_zero_naming_every_error_and_writes_nothing() {
    let h = Harness::start("dry-run-invalid");
    let file = h.s.file(&format!(
        r#"
services:
  web:
    image: {IMAGE}
    gpus: all
    ports: ["eighty"]
  db:
    image: {IMAGE}
    restart: sometimes
    deploy: {{resources: {{reservations: {{cpus: "1"}}}}}}
networks:
  back: {{enable_ipv4: true}}
"#
    ));
    let revision = h.etcd.revision();
    let out =
        h.d.cli(&["apply", "-f", &file, "--stack", &h.s.name, "--dry-run"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a dry run of an invalid file fails");
    let missing: Vec<&str> = [
        "services.web.gpus",
        "services.web.ports[0]",
        "services.db.restart",
        "services.db.deploy.resources.reservations.cpus",
        "networks.back.enable_ipv4",
    ]
    .into_iter()
    .filter(|field| !err.lines().any(|l| l.starts_with(&format!("  {field}: "))))
    .collect();
    assert!(missing.is_empty(), "no error names {missing:?}:\n{err}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("(dry run)"), "no outcome is printed: {said}");
    if let Err(e) = nothing_stored(&h, revision, "the dry run") {
        panic!("{e}");
    }
}

/// Where capstan gives a file another meaning than `docker compose up` (a service without
/// `restart` is restarted), `apply` says so once per difference, naming exactly the services
/// it affects; and it says which way each fixed host port is served (here, by the engine).
#[test]
fn apply_prints_a_notice_naming_the_services_whose_meaning_differs_from_compose() {
    let h = Harness::start("notices");
    let port = free_port();
    let file = h.s.file(&format!(
        r#"
services:
  web:
    image: {IMAGE}
    ports: ["127.0.0.1:{port}:80"]
  worker:
    image: {IMAGE}
  cache:
    image: {IMAGE}
    restart: "no"
    ports: ["80"]
"#
    ));
    // --wait: nothing is still being made when the test ends and its guard cleans up.
    let apply = [
        "apply",
        "-f",
        &file,
        "--stack",
        &h.s.name,
        "--wait",
        "--timeout",
        "90s",
    ];
    let out = h.d.cli(&apply);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let notices: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("notice: "))
        .collect();
    assert_eq!(notices.len(), 2, "one notice per difference:\n{err}");
    let restart = notices.iter().find(|n| n.starts_with("restart:"));
    assert!(
        restart.is_some_and(|n| n.contains("(web, worker)")),
        "the restart notice names web and worker only:\n{err}"
    );
    let ports = notices.iter().find(|n| n.starts_with("ports:"));
    assert!(
        ports.is_some_and(|n| n.contains(&format!("(web {port})"))),
        "the ports notice names web's fixed port only:\n{err}"
    );
}

#[test]
fn an_invalid_file_is_refused_naming_the_field_and_nothing_reaches_etcd() {
    let h = Harness::start("invalid");
    let (d, s, etcd) = (&h.d, &h.s, &h.etcd);
    let body = format!("services:\n  web:\n    image: {IMAGE}\n    deploy:\n      replicas: three\n    gpus: all\n");
    let resp = d
        .api()
        .put(format!("{API}/v1/stacks/{}", s.name))
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let err: serde_json::Value = resp.json().unwrap();
    let fields: Vec<&str> = err["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        vec!["services.web.gpus", "services.web.deploy.replicas"],
        "{err}"
    );
    assert!(err["details"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("\"three\""));

    let out = d.cli(&["apply", "-f", &s.file(&body), "--stack", &s.name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("services.web.deploy.replicas"));
    assert!(
        etcd.keys(&d.prefix).is_empty(),
        "etcd is untouched: {:?}",
        etcd.keys(&d.prefix)
    );
    assert!(s.containers().is_empty());
}
