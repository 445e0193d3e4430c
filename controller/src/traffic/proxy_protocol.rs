//! The PROXY protocol header (HAProxy's specification, versions 1 and 2) the proxy sends a
//! replica first on a port that declares `x-capstan-proxy-protocol`: it carries the client's
//! address, which the replica would otherwise never see behind the proxy. Pure.

use capstan_api::spec::ProxyProtocol;
use std::net::{IpAddr, SocketAddr};

/// The 12 bytes that open every version 2 header.
const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2, command PROXY (a relayed connection, not a health check of the proxy's own).
const V2_PROXY: u8 = 0x21;
/// Address family and transport: TCP over IPv4, TCP over IPv6.
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;

/// The header announcing a connection from `client` that arrived at `local` (the proxy's
/// listening address, as the client saw it).
pub fn header(version: ProxyProtocol, client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let (client, local) = same_family(client, local);
    match version {
        ProxyProtocol::V1 => v1(client, local),
        ProxyProtocol::V2 => v2(client, local),
    }
}

/// Both addresses in one family, as both versions want: an IPv4 client of a dual-stack
/// listener arrives as `::ffff:a.b.c.d` and is written as IPv4; an IPv4 address beside an
/// IPv6 one is written IPv4-mapped.
fn same_family(client: SocketAddr, local: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (client, local) = (canonical(client), canonical(local));
    let mapped = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    match client.is_ipv4() == local.is_ipv4() {
        true => (client, local),
        false => (mapped(client), mapped(local)),
    }
}

fn v1(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let family = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        client.ip(),
        local.ip(),
        client.port(),
        local.port()
    )
    .into_bytes()
}

fn v2(client: SocketAddr, local: SocketAddr) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(V2_PROXY);
    let addresses = match (client.ip(), local.ip()) {
        (IpAddr::V4(c), IpAddr::V4(l)) => {
            out.push(V2_TCP4);
            [c.octets().to_vec(), l.octets().to_vec()].concat()
        }
        (c, l) => {
            out.push(V2_TCP6);
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(ip) => ip.to_ipv6_mapped().octets(),
                IpAddr::V6(ip) => ip.octets(),
            };
            [v6(c).to_vec(), v6(l).to_vec()].concat()
        }
    };
    let length = (addresses.len() + 4) as u16;
    out.extend(length.to_be_bytes());
    out.extend(addresses);
    out.extend(client.port().to_be_bytes());
    out.extend(local.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn version_1_writes_an_ipv4_connection_as_one_text_line() {
        let h = header(
            ProxyProtocol::V1,
            addr("192.0.2.7:51000"),
            addr("198.51.100.1:8080"),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8080\r\n");
    }

    #[test]
    fn version_1_writes_an_ipv6_connection_in_its_usual_notation() {
        let h = header(
            ProxyProtocol::V1,
            addr("[2001:db8::7]:51000"),
            addr("[2001:db8::1]:443"),
        );
        assert_eq!(h, b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n");
    }

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_written_as_ipv4() {
        let h = header(
            ProxyProtocol::V1,
            addr("[::ffff:192.0.2.7]:51000"),
            addr("[::ffff:198.51.100.1]:8080"),
        );
        assert_eq!(h, b"PROXY TCP4 192.0.2.7 198.51.100.1 51000 8080\r\n");
    }

    #[test]
    fn mixed_families_are_written_as_ipv6_with_the_ipv4_address_mapped() {
        let h = header(
            ProxyProtocol::V1,
            addr("192.0.2.7:51000"),
            addr("[2001:db8::1]:443"),
        );
        assert_eq!(h, b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 51000 443\r\n");
    }

    #[test]
    fn version_2_writes_an_ipv4_connection_in_28_bytes() {
        let h = header(
            ProxyProtocol::V2,
            addr("192.0.2.7:51000"),
            addr("198.51.100.1:8080"),
        );
        let mut want = V2_SIGNATURE.to_vec();
        want.extend([0x21, 0x11, 0, 12]);
        want.extend([192, 0, 2, 7, 198, 51, 100, 1]);
        want.extend([0xC7, 0x38, 0x1F, 0x90]);
        assert_eq!(h, want);
    }

    #[test]
    fn version_2_writes_an_ipv6_connection_in_52_bytes() {
        let h = header(
            ProxyProtocol::V2,
            addr("[2001:db8::7]:51000"),
            addr("[2001:db8::1]:443"),
        );
        assert_eq!(h.len(), 16 + 36);
        assert_eq!(&h[..12], &V2_SIGNATURE);
        assert_eq!(&h[12..16], &[0x21, 0x21, 0, 36]);
        let mut client = [0u8; 16];
        client[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        client[15] = 7;
        assert_eq!(&h[16..32], &client);
        assert_eq!(h[47], 1, "the local address ends in ::1");
        assert_eq!(&h[48..], &[0xC7, 0x38, 0x01, 0xBB]);
    }
}
