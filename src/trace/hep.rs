//! HEPv3 (the Homer Encapsulation Protocol) over UDP: one datagram per message.
//!
//! A datagram is `HEP3`, its total length (u16), then chunks of vendor id (u16, 0 =
//! generic), type (u16), length including these 6 bytes (u16) and the value; numbers are
//! big-endian.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::UNIX_EPOCH;

use super::Captured;

/// The generic chunk types of the HEPv3 specification this edge sends.
pub mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTO: u16 = 0x0002;
    pub const SRC_IPV4: u16 = 0x0003;
    pub const DST_IPV4: u16 = 0x0004;
    pub const SRC_IPV6: u16 = 0x0005;
    pub const DST_IPV6: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TIME_SEC: u16 = 0x0009;
    pub const TIME_USEC: u16 = 0x000a;
    pub const PROTO_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
    pub const CORRELATION_ID: u16 = 0x0011;
    pub const NODE_NAME: u16 = 0x0013;
}

/// Protocol type 1: the payload is SIP.
pub const PROTO_SIP: u8 = 1;

/// Sends each captured message to one collector.
pub struct HepSender {
    socket: UdpSocket,
    to: SocketAddr,
    node_id: u32,
    node_name: String,
    password: Option<String>,
}

impl HepSender {
    pub fn new(
        to: SocketAddr,
        node_id: u32,
        node_name: &str,
        password: Option<&str>,
    ) -> std::io::Result<HepSender> {
        let any: SocketAddr = if to.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any)?;
        // A collector that is down must not stall the writer thread.
        socket.set_nonblocking(true)?;
        Ok(HepSender {
            socket,
            to,
            node_id,
            node_name: node_name.to_string(),
            password: password.map(str::to_string),
        })
    }

    /// Sends one message; a failed send is lost like any datagram.
    pub fn send(&self, c: &Captured, call_id: Option<&str>) {
        let packet = encode(
            c,
            call_id,
            self.node_id,
            &self.node_name,
            self.password.as_deref(),
        );
        if let Err(e) = self.socket.send_to(&packet, self.to) {
            tracing::debug!(to = %self.to, error = %e, "HEP send failed");
        }
    }
}

/// One HEPv3 datagram for a captured message.
pub fn encode(
    c: &Captured,
    call_id: Option<&str>,
    node_id: u32,
    node_name: &str,
    password: Option<&str>,
) -> Vec<u8> {
    let (src, dst) = c.ends();
    let at = c.at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut out = Vec::with_capacity(128 + c.bytes.len());
    out.extend_from_slice(b"HEP3\0\0");
    let mut put = |kind: u16, value: &[u8]| {
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&((6 + value.len()) as u16).to_be_bytes());
        out.extend_from_slice(value);
    };
    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            put(chunk::IP_FAMILY, &[2]);
            put(chunk::SRC_IPV4, &s.octets());
            put(chunk::DST_IPV4, &d.octets());
        }
        (s, d) => {
            put(chunk::IP_FAMILY, &[10]);
            put(chunk::SRC_IPV6, &v6(s));
            put(chunk::DST_IPV6, &v6(d));
        }
    }
    put(
        chunk::IP_PROTO,
        &[if c.transport.is_stream() { 6 } else { 17 }],
    );
    put(chunk::SRC_PORT, &src.port().to_be_bytes());
    put(chunk::DST_PORT, &dst.port().to_be_bytes());
    put(chunk::TIME_SEC, &(at.as_secs() as u32).to_be_bytes());
    put(chunk::TIME_USEC, &at.subsec_micros().to_be_bytes());
    put(chunk::PROTO_TYPE, &[PROTO_SIP]);
    put(chunk::CAPTURE_ID, &node_id.to_be_bytes());
    if let Some(p) = password {
        put(chunk::AUTH_KEY, p.as_bytes());
    }
    if let Some(id) = call_id {
        put(chunk::CORRELATION_ID, id.as_bytes());
    }
    put(chunk::NODE_NAME, node_name.as_bytes());
    put(chunk::PAYLOAD, &c.bytes);
    let len = out.len() as u16;
    out[4..6].copy_from_slice(&len.to_be_bytes());
    out
}

fn v6(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}
