//! A pcap file of the messages, one packet each, with synthesised IP and UDP/TCP headers.
//!
//! Written by hand (classic libpcap format, LINKTYPE_RAW so IPv4 and IPv6 packets share one
//! file): the format is a 24-byte header and a 16-byte record header per packet, which is
//! less than a crate's API. TCP segments carry sequence numbers that continue per flow, so
//! Wireshark reassembles a message split over segments and sees no gaps.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::Captured;

/// LINKTYPE_RAW: each packet begins with its IPv4 or IPv6 header.
const LINKTYPE_RAW: u32 = 101;
/// Longest TCP payload put in one segment: an IPv4 packet's length is 16 bits.
const MAX_SEGMENT: usize = 65_000;
const GLOBAL_HEADER: u64 = 24;

/// An open pcap file that rotates by size.
pub struct PcapFile {
    path: PathBuf,
    max_bytes: u64,
    out: BufWriter<File>,
    written: u64,
    /// The next sequence number per (source, destination) TCP flow.
    next_seq: HashMap<(SocketAddr, SocketAddr), u32>,
}

impl PcapFile {
    /// Creates (truncates) `path` and writes the file header.
    pub fn create(path: &Path, max_bytes: u64) -> std::io::Result<PcapFile> {
        let mut f = PcapFile {
            path: path.to_path_buf(),
            max_bytes,
            out: BufWriter::new(File::create(path)?),
            written: 0,
            next_seq: HashMap::new(),
        };
        f.header()?;
        Ok(f)
    }

    fn header(&mut self) -> std::io::Result<()> {
        let mut h = Vec::with_capacity(GLOBAL_HEADER as usize);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&262_144u32.to_le_bytes());
        h.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        self.out.write_all(&h)?;
        self.written = GLOBAL_HEADER;
        Ok(())
    }

    /// Writes one message: one UDP datagram, or TCP segments of at most `MAX_SEGMENT`.
    pub fn write(&mut self, c: &Captured) -> std::io::Result<()> {
        let (src, dst) = c.ends();
        let at = c.at.duration_since(UNIX_EPOCH).unwrap_or_default();
        if c.transport.is_stream() {
            for chunk in c.bytes.chunks(MAX_SEGMENT) {
                let seq = self.next_seq.entry((src, dst)).or_insert(1);
                let this = *seq;
                *seq = seq.wrapping_add(chunk.len() as u32);
                let ack = *self.next_seq.entry((dst, src)).or_insert(1);
                let packet = packet(src, dst, Proto::Tcp { seq: this, ack }, chunk);
                self.record(at, &packet)?;
            }
            Ok(())
        } else {
            let packet = packet(src, dst, Proto::Udp, &c.bytes);
            self.record(at, &packet)
        }
    }

    fn record(&mut self, at: std::time::Duration, packet: &[u8]) -> std::io::Result<()> {
        let size = 16 + packet.len() as u64;
        if self.written + size > self.max_bytes && self.written > GLOBAL_HEADER {
            self.rotate()?;
        }
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&(at.as_secs() as u32).to_le_bytes());
        h[4..8].copy_from_slice(&at.subsec_micros().to_le_bytes());
        h[8..12].copy_from_slice(&(packet.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&(packet.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(packet)?;
        self.written += size;
        Ok(())
    }

    /// FILE becomes FILE.1 (replacing the previous one) and a new FILE begins.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        self.out = BufWriter::new(File::create(&self.path)?);
        self.header()
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

enum Proto {
    Udp,
    Tcp { seq: u32, ack: u32 },
}

/// An IPv4 or IPv6 packet (by the source's family; a mixed pair is mapped to IPv6) carrying
/// `payload` in UDP or a TCP segment with PSH|ACK, checksums filled in.
fn packet(src: SocketAddr, dst: SocketAddr, proto: Proto, payload: &[u8]) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20 + payload.len());
    l4.extend_from_slice(&src.port().to_be_bytes());
    l4.extend_from_slice(&dst.port().to_be_bytes());
    let (proto_id, csum_at) = match proto {
        Proto::Udp => {
            l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
            (17u8, 6)
        }
        Proto::Tcp { seq, ack } => {
            l4.extend_from_slice(&seq.to_be_bytes());
            l4.extend_from_slice(&ack.to_be_bytes());
            l4.push(5 << 4);
            l4.push(0x18);
            l4.extend_from_slice(&65_535u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 0]);
            (6u8, 16)
        }
    };
    l4.extend_from_slice(payload);
    let (s, d) = (src.ip(), dst.ip());
    let mut out = Vec::with_capacity(40 + l4.len());
    match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&s.octets());
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&[0, proto_id]);
            pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            let mut sum = checksum(&[&pseudo, &l4]);
            if proto_id == 17 && sum == 0 {
                sum = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[6] = 0x40;
            ip[8] = 64;
            ip[9] = proto_id;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ip);
        }
        _ => {
            let s = to_v6(s).octets();
            let d = to_v6(d).octets();
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&s);
            pseudo.extend_from_slice(&d);
            pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, proto_id]);
            let mut sum = checksum(&[&pseudo, &l4]);
            if proto_id == 17 && sum == 0 {
                sum = 0xffff;
            }
            l4[csum_at..csum_at + 2].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&0x6000_0000u32.to_be_bytes());
            out.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            out.push(proto_id);
            out.push(64);
            out.extend_from_slice(&s);
            out.extend_from_slice(&d);
        }
    }
    out.extend_from_slice(&l4);
    out
}

fn to_v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

/// The Internet checksum (RFC 1071) over the parts as one byte string.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let src: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let dst: SocketAddr = "127.0.0.2:5061".parse().unwrap();
        let p = packet(src, dst, Proto::Udp, b"OPTIONS sip:x SIP/2.0\r\n\r\n");
        assert_eq!(checksum(&[&p[..20]]), 0, "IPv4 header checksum");
        let mut pseudo = p[12..20].to_vec();
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&((p.len() - 20) as u16).to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &p[20..]]), 0, "UDP checksum");
    }

    #[test]
    fn the_file_rotates_past_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        let mut f = PcapFile::create(&path, 1000).unwrap();
        let a: SocketAddr = "127.0.0.1:5060".parse().unwrap();
        let c = Captured {
            at: std::time::SystemTime::now(),
            direction: super::super::Direction::Sent,
            interface: crate::peer::Interface::External,
            transport: crate::peer::Transport::Tcp,
            local: a,
            remote: a,
            bytes: bytes::Bytes::from(vec![b'x'; 600]),
        };
        f.write(&c).unwrap();
        f.write(&c).unwrap();
        f.flush().unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert!(size(&path) <= 1000);
        assert!(size(&dir.path().join("t.pcap.1")) <= 1000);
    }
}
