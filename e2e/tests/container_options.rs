//! Container, volume and network options reach the engine exactly: a Compose file that sets
//! many of them at once is applied for real, and `docker inspect` shows each exact value.
//!
//! Not here: `privileged` (this machine's engine cannot start privileged containers: "unable
//! to apply caps: operation not permitted"; its mapping is unit-tested), `network_mode: host`,
//! IPv6 and `annotations`/`mac_address`/`volume.subpath` (newer than API 1.41; the refusal is
//! tested below for `annotations`).

use capstan_e2e::*;
use std::path::Path;

/// A process that stops at once on TERM or INT, so the image's httpd (which would need port
/// 80 as root and a writable /www) is not in the way of `user` and `read_only`.
const IDLE: &str = r#"["sh", "-c", "trap 'exit 0' TERM INT; while true; do sleep 1; done"]"#;

fn compose(stack: &str) -> String {
    format!(
        r#"
services:
  app:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    container_name: {stack}-main
    hostname: apphost
    domainname: example.org
    user: "1000:1000"
    group_add: ["44"]
    working_dir: /tmp
    stop_signal: SIGINT
    cap_add: [NET_ADMIN]
    cap_drop: [MKNOD]
    read_only: true
    tmpfs: ["/run:size=1m"]
    shm_size: 64m
    ulimits:
      nofile: {{soft: 1024, hard: 2048}}
      nproc: 512
    sysctls: {{net.core.somaxconn: "1024"}}
    security_opt: ["no-new-privileges:true"]
    init: true
    tty: true
    stdin_open: true
    logging: {{driver: json-file, options: {{max-size: 1m}}}}
    extra_hosts: ["db.local:10.9.0.2"]
    dns: [10.9.0.53]
    dns_search: [example.org]
    dns_opt: ["ndots:2"]
    devices: ["/dev/null:/dev/mynull:r"]
    pids_limit: 64
    mem_limit: 64m
    memswap_limit: 128m
    mem_reservation: 32m
    cpus: 0.5
    cpu_shares: 512
    cpuset: "0"
    oom_score_adj: 100
    oom_kill_disable: true
    platform: linux/amd64
    runtime: runc
    expose: ["9000"]
    links: ["db:database"]
    deploy:
      labels: {{team: core}}
      restart_policy: {{condition: on-failure, max_attempts: 3}}
    volumes:
      - "data:/data:nocopy"
      - "./conf:/conf:ro,z"
      - {{type: bind, source: ./conf, target: /pinned, read_only: true, bind: {{propagation: rprivate, create_host_path: false}}}}
      - {{type: tmpfs, target: /scratch, tmpfs: {{size: 2m, mode: 1777}}}}
    networks:
      back: {{ipv4_address: 10.213.7.10, aliases: [application]}}
  db:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    networks: [back]
  worker:
    image: {IMAGE}
    command: {IDLE}
    healthcheck: {{disable: true}}
    network_mode: none
    deploy:
      mode: global
      resources:
        limits: {{cpus: "0.25", memory: 32m, pids: 50}}
        reservations: {{memory: 16m}}
networks:
  back:
    driver_opts: {{com.docker.network.bridge.enable_icc: "true"}}
    ipam:
      config: [{{subnet: 10.213.7.0/24, gateway: 10.213.7.1}}]
volumes:
  data:
    driver_opts: {{type: tmpfs, device: tmpfs, o: size=1m}}
"#
    )
}

/// `(left, right)` pairs of inspected values and the values the file asked for.
fn expect_all(target: &str, pairs: &[(&str, &str)]) {
    let mut wrong = vec![];
    for (format, want) in pairs {
        let got = inspect(target, format);
        if got != *want {
            wrong.push(format!("{format}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{target}:\n{}", wrong.join("\n"));
}

#[test]
fn every_option_of_a_real_compose_file_reaches_the_engine() {
    let h = Harness::start("options");
    let (d, s) = (&h.d, &h.s);
    let yaml = compose(&s.name);
    let file = s.file(&yaml);
    let dir = Path::new(&file).parent().unwrap().to_path_buf();
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    d.apply(s, &yaml);

    let app = format!("{}-main", s.name);
    let back = format!("{}_back", s.name);
    expect_all(
        &app,
        &[
            ("{{.Name}}", &format!("/{app}")),
            ("{{index .Config.Labels \"capstan.replica\"}}", "1"),
            ("{{.Config.Hostname}}", "apphost"),
            ("{{.Config.Domainname}}", "example.org"),
            ("{{.Config.User}}", "1000:1000"),
            ("{{json .HostConfig.GroupAdd}}", r#"["44"]"#),
            ("{{.Config.WorkingDir}}", "/tmp"),
            ("{{.Config.StopSignal}}", "SIGINT"),
            ("{{.Config.Tty}} {{.Config.OpenStdin}}", "true true"),
            ("{{json .HostConfig.CapAdd}}", r#"["NET_ADMIN"]"#),
            ("{{json .HostConfig.CapDrop}}", r#"["MKNOD"]"#),
            ("{{.HostConfig.ReadonlyRootfs}}", "true"),
            ("{{json .HostConfig.Tmpfs}}", r#"{"/run":"size=1m"}"#),
            ("{{.HostConfig.ShmSize}}", "67108864"),
            (
                "{{range .HostConfig.Ulimits}}{{.Name}}={{.Soft}}:{{.Hard}} {{end}}",
                "nofile=1024:2048 nproc=512:512",
            ),
            ("{{json .HostConfig.Sysctls}}", r#"{"net.core.somaxconn":"1024"}"#),
            ("{{json .HostConfig.SecurityOpt}}", r#"["no-new-privileges:true"]"#),
            ("{{.HostConfig.Init}}", "true"),
            ("{{.HostConfig.LogConfig.Type}}", "json-file"),
            ("{{index .HostConfig.LogConfig.Config \"max-size\"}}", "1m"),
            ("{{json .HostConfig.ExtraHosts}}", r#"["db.local:10.9.0.2"]"#),
            ("{{json .HostConfig.Dns}}", r#"["10.9.0.53"]"#),
            ("{{json .HostConfig.DnsSearch}}", r#"["example.org"]"#),
            ("{{json .HostConfig.DnsOptions}}", r#"["ndots:2"]"#),
            (
                "{{range .HostConfig.Devices}}{{.PathOnHost}}:{{.PathInContainer}}:{{.CgroupPermissions}}{{end}}",
                "/dev/null:/dev/mynull:r",
            ),
            ("{{.HostConfig.PidsLimit}}", "64"),
            ("{{.HostConfig.Memory}}", "67108864"),
            ("{{.HostConfig.MemorySwap}}", "134217728"),
            ("{{.HostConfig.MemoryReservation}}", "33554432"),
            ("{{.HostConfig.NanoCpus}}", "500000000"),
            ("{{.HostConfig.CpuShares}}", "512"),
            ("{{.HostConfig.CpusetCpus}}", "0"),
            ("{{.HostConfig.OomScoreAdj}}", "100"),
            ("{{.HostConfig.OomKillDisable}}", "true"),
            ("{{.HostConfig.Runtime}}", "runc"),
            // All the engine records of `platform` (its OS); the test below shows that the
            // whole value reaches create.
            ("{{.Platform}}", "linux"),
            ("{{.HostConfig.RestartPolicy.Name}}", "no"),
            (
                &format!("{{{{(index .NetworkSettings.Networks \"{back}\").IPAddress}}}}"),
                "10.213.7.10",
            ),
            (
                &format!("{{{{(index .NetworkSettings.Networks \"{back}\").IPAMConfig.IPv4Address}}}}"),
                "10.213.7.10",
            ),
            (
                "{{json .HostConfig.Binds}}",
                &format!(
                    r#"["{}_data:/data:nocopy","{}/conf:/conf:ro,z"]"#,
                    s.name,
                    dir.display()
                ),
            ),
            (
                "{{range .HostConfig.Mounts}}{{.Type}} {{.Target}} {{.ReadOnly}}|{{end}}",
                "bind /pinned true|tmpfs /scratch false|",
            ),
            (
                "{{range .HostConfig.Mounts}}{{with .TmpfsOptions}}{{.SizeBytes}} {{printf \"%o\" .Mode}}{{end}}{{end}}",
                "2097152 1777",
            ),
            (
                "{{range .Mounts}}{{if eq .Destination \"/pinned\"}}{{.Propagation}}{{end}}{{end}}",
                "rprivate",
            ),
        ],
    );
    let exposed = inspect(&app, "{{json .Config.ExposedPorts}}");
    assert!(exposed.contains("\"9000/tcp\""), "{exposed}");
    let db = s.replica("db", 1);
    let aliases = inspect(
        &db,
        &format!("{{{{json (index .NetworkSettings.Networks \"{back}\").Aliases}}}}"),
    );
    assert!(
        aliases.contains("\"database\""),
        "the link alias is db's: {aliases}"
    );
    expect_all(
        &s.replica("worker", 1),
        &[
            ("{{.HostConfig.NetworkMode}}", "none"),
            ("{{.HostConfig.Memory}}", "33554432"),
            ("{{.HostConfig.MemoryReservation}}", "16777216"),
            ("{{.HostConfig.NanoCpus}}", "250000000"),
            ("{{.HostConfig.PidsLimit}}", "50"),
        ],
    );
    let net = |format: &str| {
        docker(&["network", "inspect", "-f", format, &back])
            .trim()
            .to_string()
    };
    assert_eq!(net("{{(index .IPAM.Config 0).Subnet}}"), "10.213.7.0/24");
    assert_eq!(net("{{(index .IPAM.Config 0).Gateway}}"), "10.213.7.1");
    assert_eq!(
        net("{{index .Options \"com.docker.network.bridge.enable_icc\"}}"),
        "true"
    );
    let vol = docker(&[
        "volume",
        "inspect",
        "-f",
        "{{json .Options}}",
        &format!("{}_data", s.name),
    ]);
    assert_eq!(
        vol.trim(),
        r#"{"device":"tmpfs","o":"size=1m","type":"tmpfs"}"#
    );
    // The replicas run as declared: the user, the read-only root, the tmpfs.
    let id = docker(&["exec", &app, "id", "-u"]);
    assert_eq!(id.trim(), "1000");
    let touch = std::process::Command::new("docker")
        .args(["exec", &app, "touch", "/etc/x"])
        .output()
        .unwrap();
    assert!(!touch.status.success(), "the root file system is read-only");
    assert!(std::process::Command::new("docker")
        .args(["exec", &app, "touch", "/scratch/x"])
        .status()
        .unwrap()
        .success());

    let mode = docker(&["exec", &app, "stat", "-c", "%a", "/scratch"]);
    assert_eq!(
        mode.trim(),
        "1777",
        "tmpfs.mode is octal, as Compose writes it"
    );

    // Applying the same file again changes nothing: the options hash is stable.
    let before = s.containers();
    d.apply(s, &yaml);
    assert_eq!(s.containers(), before);
}

const CONVERGE: std::time::Duration = std::time::Duration::from_secs(60);

#[test]
fn an_option_newer_than_the_engine_is_reported_by_name_not_dropped() {
    let h = Harness::start("too-new");
    let (d, s) = (&h.d, &h.s);
    d.apply_nowait(
        s,
        &format!(
            "services:\n  web:\n    image: {IMAGE}\n    command: {IDLE}\n    annotations: {{com.example.team: core}}\n"
        ),
    );
    let api = docker(&["version", "-f", "{{.Server.APIVersion}}"]);
    if api.trim() >= "1.43" {
        wait_until(CONVERGE, "the annotated replica to run", || {
            s.running() == vec![s.replica("web", 1)]
        });
        return;
    }
    d.wait_for_reason(
        &s.name,
        "web",
        "EngineError",
        "`annotations` needs Docker API 1.43",
    );
    assert!(s.containers().is_empty(), "nothing half-made is left");
}

/// `platform` is passed to create, where the engine checks it against the image: an image
/// of another platform is refused in the engine's words (which name both platforms), shown
/// in the service's status, and no container is made.
#[test]
fn a_platform_the_image_was_not_made_for_is_refused_by_the_engine_in_the_status() {
    let h = Harness::start("foreign-platform");
    let (d, s) = (&h.d, &h.s);
    let arch = docker(&["image", "inspect", "-f", "{{.Architecture}}", IMAGE]);
    let foreign = if arch.trim() == "arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    d.apply_nowait(
        s,
        &format!(
            "services:\n  native:\n    image: {IMAGE}\n    platform: linux/{}\n  foreign:\n    image: {IMAGE}\n    platform: {foreign}\n",
            arch.trim()
        ),
    );
    d.wait_for_reason(
        &s.name,
        "foreign",
        "EngineError",
        &format!("does not match the specified platform: wanted {foreign}"),
    );
    wait_until(
        CONVERGE,
        "the replica of the image's platform to run",
        || d.converged(&s.name, "native", 1),
    );
    assert_eq!(s.running(), vec![s.replica("native", 1)]);
}

#[test]
fn a_file_with_bad_option_values_is_refused_with_every_field_and_nothing_is_stored() {
    let h = Harness::start("refused");
    let (d, s) = (&h.d, &h.s);
    let file = s.file(&format!(
        r#"
services:
  web:
    image: {IMAGE}
    ipc: hots
    shm_size: lots
    ulimits: {{nofile: {{soft: 10, hard: 5}}}}
    volumes:
      - {{type: bind, source: /srv, target: rel, bind: {{propagation: sideways}}}}
    container_name: solo
    deploy: {{replicas: 2, placement: {{}}}}
"#
    ));
    let out = d.cli(&["apply", "-f", &file, "--stack", &s.name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "services.web.ipc",
        "services.web.shm_size",
        "services.web.ulimits.nofile",
        "services.web.volumes[0].bind.propagation",
        "services.web.volumes[0].target",
        "services.web.container_name",
        "services.web.deploy.placement",
    ] {
        assert!(
            err.contains(&format!("{field}:")),
            "{field} missing from:\n{err}"
        );
    }
    assert!(
        h.etcd.keys(&d.prefix).is_empty(),
        "nothing was stored: {:?}",
        h.etcd.keys(&d.prefix)
    );
    assert!(s.containers().is_empty());
}

#[test]
fn deploy_restart_policy_limits_the_restarts_of_a_failing_replica() {
    let h = Harness::start("restart-policy");
    let (d, s) = (&h.d, &h.s);
    let name = s.replica("job", 1);
    // Followed live: the engine keeps only its last 256 events, which other tests on a
    // busy engine push out.
    let events = Events::follow(&name);
    d.apply_nowait(
        s,
        &format!(
            r#"
services:
  job:
    image: {IMAGE}
    command: ["sh", "-c", "exit 3"]
    healthcheck: {{disable: true}}
    deploy:
      restart_policy: {{condition: on-failure, max_attempts: 2, delay: 0s, window: 1h}}
"#
        ),
    );
    let mut starts = 0;
    wait_until(CONVERGE, "the first start and two restarts", || {
        starts += events.drain("start").len();
        starts >= 3
    });
    // Left exited: the engine says so, and a resync later the daemon has not started it.
    wait_until(CONVERGE, "the replica to be left exited", || {
        inspect(&name, "{{.State.Status}}") == "exited"
    });
    d.wait_for_resync();
    starts += events.drain("start").len();
    assert_eq!(
        starts, 3,
        "max_attempts: 2 restarts, then the replica is left exited"
    );
    assert_eq!(inspect(&name, "{{.State.ExitCode}}"), "3");
    assert_eq!(inspect(&name, "{{.HostConfig.RestartPolicy.Name}}"), "no");
}
