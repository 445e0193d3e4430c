//! Every way a stack could reach a host path goes through the bind policy, for a `deploy`
//! token over TCP: binds (short and long syntax), named volumes whose `local` driver
//! options bind a folder or mount a device or a kernel file system, volume plugins,
//! `build.network: host` (at apply and on the build route), secrets read from a file, and
//! tagging a build over an image capstan did not build. Each is a 400 (or 409) naming the
//! field and the rule, and etcd is unchanged. An operator's policy lets a volume bind what
//! it allows, and the replica sees it.

use capstan_e2e::*;

/// (what, Compose file sent to the API, the field refused, what the reason starts with).
const REFUSED: &[(&str, &str, &str, &str)] = &[
    (
        "a bind of /, short syntax",
        "services: {web: {image: {IMAGE}, volumes: ['/:/host:ro']}}",
        "services.web.volumes[0]",
        "policy rule bind_mounts (profile baseline, caller token \"ci\"):",
    ),
    (
        "a bind of /run, long syntax",
        "services: {web: {image: {IMAGE}, volumes: [{type: bind, source: /run, target: /r}]}}",
        "services.web.volumes[0]",
        "policy rule bind_mounts (profile baseline, caller token \"ci\"):",
    ),
    (
        "a named volume binding /",
        "services: {web: {image: {IMAGE}, volumes: ['root:/host:ro']}}\nvolumes: {root: {driver_opts: {type: none, o: bind, device: /}}}",
        "volumes.root.driver_opts.device",
        "policy rule bind_mounts (profile baseline, caller token \"ci\"):",
    ),
    (
        "a named volume binding /run (the Docker socket)",
        "services: {web: {image: {IMAGE}, volumes: ['run:/hostrun']}}\nvolumes: {run: {driver: local, driver_opts: {type: none, o: bind, device: /run}}}",
        "volumes.run.driver_opts.device",
        "policy rule bind_mounts (profile baseline, caller token \"ci\"):",
    ),
    (
        "a named volume mounting a host disk",
        "services: {web: {image: {IMAGE}, volumes: ['disk:/d']}}\nvolumes: {disk: {driver_opts: {type: ext4, device: /dev/sda1}}}",
        "volumes.disk.driver_opts.device",
        "policy rule bind_mounts (profile baseline, caller token \"ci\"):",
    ),
    (
        "a named volume mounting the host's /proc",
        "services: {web: {image: {IMAGE}, volumes: ['p:/p']}}\nvolumes: {p: {driver_opts: {type: proc, device: proc}}}",
        "volumes.p.driver_opts.type",
        "policy rule volume_types (profile baseline, caller token \"ci\"):",
    ),
    (
        "a volume plugin",
        "services: {web: {image: {IMAGE}, volumes: ['v:/v']}}\nvolumes: {v: {driver: local-persist, driver_opts: {mountpoint: /}}}",
        "volumes.v.driver",
        "policy rule volume_drivers (profile baseline, caller token \"ci\"):",
    ),
    (
        "a macvlan network",
        "services: {web: {image: {IMAGE}, networks: [lan]}}\nnetworks: {lan: {driver: macvlan, driver_opts: {parent: eth0}}}",
        "networks.lan.driver",
        "policy rule network_drivers (profile baseline, caller token \"ci\"):",
    ),
    (
        "a build on the host's network",
        "services: {web: {image: capstan.local/s/web:0123456789abcdef, build: {context: /src, network: host}}}",
        "services.web.build.network",
        "policy rule host_network (profile baseline, caller token \"ci\"):",
    ),
    (
        "a build in another container's network namespace",
        "services: {web: {image: capstan.local/s/web:0123456789abcdef, build: {context: /src, network: 'container:etcd'}}}",
        "services.web.build.network",
        "\"container:etcd\" would run the build's steps",
    ),
    (
        "systempaths=unconfined",
        "services: {web: {image: {IMAGE}, security_opt: ['systempaths=unconfined']}}",
        "services.web.security_opt[0]",
        "policy rule unconfined (profile baseline, caller token \"ci\"):",
    ),
    (
        "a secret read from a file by the daemon",
        "services: {web: {image: {IMAGE}, secrets: [pw]}}\nsecrets: {pw: {file: /etc/shadow}}",
        "secrets.pw.file",
        "`capstan apply` reads the file on the client",
    ),
];

/// A daemon with a TCP listener, and a `deploy` token for it.
struct Deployer {
    h: Harness,
    tcp: String,
    token: String,
}

impl Deployer {
    fn start(tag: &str, extra: &[&str]) -> Deployer {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut flags = vec!["--listen", listen.as_str()];
        flags.extend_from_slice(extra);
        let h = Harness::start_with(tag, &flags);
        let out = h.d.cli_ok(&["token", "create", "ci", "--role", "deploy"]);
        Deployer {
            tcp: format!("http://{listen}"),
            token: out.trim().to_string(),
            h,
        }
    }

    fn put(&self, yaml: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::blocking::Client::new()
            .put(format!("{}/v1/stacks/{}", self.tcp, self.h.s.name))
            .bearer_auth(&self.token)
            .body(yaml.replace("{IMAGE}", IMAGE))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or_default())
    }

    fn build(&self, options: serde_json::Value) -> (u16, serde_json::Value) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/builds", self.tcp))
            .query(&[("options", options.to_string())])
            .bearer_auth(&self.token)
            .body(Vec::<u8>::new())
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or_default())
    }
}

/// The reason given for `field`, if the refusal names it.
fn reason_for<'a>(err: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    let details = err["details"].as_array()?;
    let d = details.iter().find(|d| d["field"] == field)?;
    d["reason"].as_str()
}

#[test]
fn a_deploy_token_reaches_no_host_path_by_any_way_the_file_offers() {
    let d = Deployer::start("paths-refused", &[]);
    for (what, yaml, field, reason) in REFUSED {
        let revision = d.h.etcd.revision();
        let (status, err) = d.put(yaml);
        assert_eq!(status, 400, "{what} was not refused: {err}");
        let given =
            reason_for(&err, field).unwrap_or_else(|| panic!("{what}: {field} not named: {err}"));
        assert!(given.starts_with(reason), "{what}: {given:?}");
        assert_eq!(d.h.etcd.revision(), revision, "{what}: etcd changed");
    }
    assert!(d.h.s.containers().is_empty());
}

#[test]
fn a_named_volume_device_that_is_a_symlink_to_root_is_refused_as_the_root() {
    let d = Deployer::start("paths-symlink", &[]);
    let link = std::env::temp_dir().join(format!("capstan-e2e-root-{}", free_port()));
    std::os::unix::fs::symlink("/", &link).unwrap();
    let yaml = format!(
        "services: {{web: {{image: {IMAGE}, volumes: ['v:/v']}}}}\nvolumes: {{v: {{driver_opts: {{type: none, o: bind, device: {}}}}}}}",
        link.display()
    );
    let revision = d.h.etcd.revision();
    let (status, err) = d.put(&yaml);
    std::fs::remove_file(&link).unwrap();
    assert_eq!(status, 400, "{err}");
    let reason = reason_for(&err, "volumes.v.driver_opts.device").expect("the device is named");
    assert!(
        reason.starts_with("policy rule bind_mounts (profile baseline, caller token \"ci\"):")
            && reason.contains("through a symlink"),
        "{reason}"
    );
    assert_eq!(d.h.etcd.revision(), revision);
}

#[test]
fn the_build_route_refuses_a_host_network_and_a_name_capstan_did_not_build() {
    let d = Deployer::start("paths-build", &[]);
    let stack = d.h.s.name.clone();
    let request = |network: Option<&str>, names: &[&str]| {
        serde_json::json!({
            "stack": stack,
            "service": "web",
            "tag": format!("capstan.local/{stack}/web:0123456789abcdef"),
            "names": names,
            "spec": {"context": "/src", "network": network},
        })
    };
    let (status, err) = d.build(request(Some("host"), &[]));
    assert_eq!(status, 400, "{err}");
    let reason = reason_for(&err, "spec.network").expect("the network is named");
    assert!(
        reason.starts_with("policy rule host_network (profile baseline, caller token \"ci\"):"),
        "{reason}"
    );

    let (status, err) = d.build(request(Some("container:etcd"), &[]));
    assert_eq!(status, 400, "{err}");

    let before = inspect(IMAGE, "{{.Id}}");
    let (status, err) = d.build(request(None, &[IMAGE]));
    assert_eq!(status, 409, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("did not build"),
        "{err}"
    );
    assert_eq!(inspect(IMAGE, "{{.Id}}"), before, "the image kept its name");
}

#[test]
fn a_policy_that_allows_a_folder_lets_a_named_volume_bind_it_and_the_replica_sees_it() {
    let dir = std::env::temp_dir().join(format!("capstan-e2e-volbind-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("hello.txt"), "from the host").unwrap();
    let policy = dir.with_extension("policy.yaml");
    std::fs::write(&policy, format!("bind_mounts: [{}]\n", dir.display())).unwrap();
    let d = Deployer::start("paths-allowed", &["--policy", policy.to_str().unwrap()]);
    let yaml = format!(
        "services:\n  web:\n    image: {IMAGE}\n    volumes: ['shared:/shared:ro']\nvolumes:\n  shared:\n    driver_opts: {{type: none, o: bind, device: '{}'}}\n",
        dir.display()
    );
    d.h.d.apply(&d.h.s, &yaml);
    let cat = docker(&["exec", &d.h.s.replica("web", 1), "cat", "/shared/hello.txt"]);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&policy);
    assert_eq!(cat.trim(), "from the host");
}
