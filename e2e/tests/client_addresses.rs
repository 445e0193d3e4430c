//! The client's address reaches the service: a one-replica service on a fixed host port is
//! published by the engine, as Compose publishes it, and a port balanced by capstan's proxy
//! passes the address on with the PROXY protocol when it declares it. Real Docker, real etcd.
//!
//! The client is this test itself, connecting to the host's own outside address (not
//! 127.0.0.1, which the engine serves through its userland proxy): the engine's NAT then
//! keeps that address as the source, while any proxy, the engine's or capstan's, shows
//! the service its network's gateway instead. A client container on another network is no
//! better here: the service sees its own gateway for it too.

use capstan_e2e::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

const ANSWER: Duration = Duration::from_secs(30);

/// The host's first IPv4 address outside the engine's bridges, where a connection from this
/// host keeps its source through the engine's NAT.
fn outside_address() -> Ipv4Addr {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip(1);
            let interface = words.next()?;
            let address = words.nth(1)?.split('/').next()?;
            let bridge = ["docker", "br-", "veth"]
                .iter()
                .any(|p| interface.starts_with(p));
            (!bridge).then(|| address.parse().ok()).flatten()
        })
        .next()
        .expect("this test needs an IPv4 address outside Docker's bridges (ip -4 addr show)")
}

/// A replica of the demo image whose web server answers `/cgi-bin/addr` with the peer
/// address it sees (`REMOTE_ADDR`, as `[::ffff:a.b.c.d]`) and its port.
const REPORTS_PEER: &str = r#"    image: capstan-demo/web:1
    entrypoint: ["/bin/sh", "-c"]
    command:
      - |
        mkdir -p /www/cgi-bin && echo up > /www/index.html
        printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho "$$REMOTE_ADDR $$REMOTE_PORT"\n' > /www/cgi-bin/addr
        chmod +x /www/cgi-bin/addr
        exec httpd -f -p 80 -h /www
    healthcheck: {disable: true}
    init: true
"#;

/// A replica that answers each connection with the first line it receives (where a PROXY
/// protocol v1 header arrives).
const ECHOES_FIRST_LINE: &str = r#"    image: capstan-demo/web:1
    entrypoint: ["/bin/sh", "-c"]
    command:
      - |
        printf '#!/bin/sh\nread line\necho "$$line"\n' > /first-line
        chmod +x /first-line
        exec nc -ll -p 80 -e /first-line
    healthcheck: {disable: true}
    init: true
"#;

/// Sends `request` to `addr` and returns the whole answer and the client's own address.
fn exchange(addr: SocketAddr, request: &[u8]) -> Result<(String, SocketAddr), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let client = s.local_addr().map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).map_err(|e| e.to_string())?;
    match answer.is_empty() {
        true => Err("an empty answer".into()),
        false => Ok((answer, client)),
    }
}

/// What the replica says it sees of a client, and the client's own address and port as the
/// replica would print them.
fn peer_seen(addr: SocketAddr) -> Result<(String, String), String> {
    let (answer, client) = exchange(addr, b"GET /cgi-bin/addr HTTP/1.0\r\n\r\n")?;
    let seen = answer.lines().last().unwrap_or_default().trim().to_string();
    Ok((seen, format!("[::ffff:{}] {}", client.ip(), client.port())))
}

#[test]
fn a_one_replica_service_on_a_fixed_port_sees_the_clients_real_address() {
    let h = Harness::start("addr-engine");
    let (d, s) = (&h.d, &h.s);
    let (host, port) = (outside_address(), free_port());
    let listen = SocketAddr::from((host, port));
    let web =
        |port_entry: &str| format!("services:\n  web:\n{REPORTS_PEER}    ports: [{port_entry}]\n");

    // Behind capstan's proxy, declared, the replica sees the proxy, not the client.
    d.apply(
        s,
        &web(&format!(
            "{{target: 80, published: {port}, x-capstan-proxy: true}}"
        )),
    );
    let (seen, client) = wait_for(ANSWER, "the proxied service to answer", || {
        peer_seen(listen)
    });
    assert_ne!(seen, client, "the proxy hides the client");

    // As Compose writes it, the engine publishes the port: the proxy hands it over and the
    // replica sees this client's own address and port.
    d.apply(s, &web(&format!("\"{port}:80\"")));
    let (seen, client) = wait_for(
        ANSWER,
        "the engine to publish the port",
        || match peer_seen(listen)? {
            (seen, client) if seen == client => Ok((seen, client)),
            (seen, client) => Err(format!("saw {seen}, the client is {client}")),
        },
    );
    assert_eq!(seen, client);
    assert_ne!(
        docker(&["port", &s.replica("web", 1)]).trim(),
        "",
        "the engine publishes the port"
    );

    let refused = d.cli(&["scale", &format!("{}/web=2", s.name)]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "scaling to 2 is refused");
    assert!(
        said.contains("ports[0]") && said.contains("x-capstan-proxy: true"),
        "the refusal names the port and what to declare: {said}"
    );
}

#[test]
fn a_proxied_port_with_the_proxy_protocol_passes_the_clients_address_on() {
    let h = Harness::start("addr-proxy");
    let (d, s) = (&h.d, &h.s);
    let (host, port) = (outside_address(), free_port());
    d.apply(
        s,
        &format!(
            "services:\n  web:\n{ECHOES_FIRST_LINE}    scale: 2\n    ports:\n      - {{target: 80, published: {port}, x-capstan-proxy-protocol: v1}}\n"
        ),
    );
    let listen = SocketAddr::from((host, port));
    for _ in 0..2 {
        let (answer, client) = wait_for(ANSWER, "a replica to answer through the proxy", || {
            exchange(listen, b"hello\n")
        });
        assert_eq!(
            answer,
            format!(
                "PROXY TCP4 {} {host} {} {port}\r\n",
                client.ip(),
                client.port()
            ),
            "the replica's first line is the PROXY header with this client's address"
        );
    }
    for n in 1..=2 {
        assert_eq!(
            docker(&["port", &s.replica("web", n)]).trim(),
            "",
            "the proxy serves the port, not the engine"
        );
    }
}
