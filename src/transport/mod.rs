//! Who sent a message and over what: interfaces, transports, peers.
//!
//! Every message the edge handles is tagged with the interface it arrived on, like the
//! real Access Edge tags NetworkInternal / NetworkExternal, because routing and policy
//! depend on which side of the edge a request came from. The types themselves live in
//! `crate::peer`, below the I/O; this module adds the sockets.

pub use crate::peer::{name_matches, Interface, Peer, PeerIdentity, Transport};

// === the seams between transports and the proxy ===

pub mod conn;
pub mod listen;
pub mod pool;
pub mod stream;
pub mod tap;
pub mod udp;

pub use conn::{ConnHandle, Registry, ReplyTo, SendError};

/// What transports deliver to. Every transport ends in this one handler (hickory's
/// `RequestHandler` idea), so the proxy does not care how bytes arrived.
pub trait Handler: Send + Sync + 'static {
    /// A whole message arrived from `peer`; `reply` reaches the sender.
    fn on_message(&self, msg: bytes::Bytes, peer: &Peer, reply: &ReplyTo);
    /// The stream could not be framed; the connection closes after this returns.
    fn on_frame_error(
        &self,
        head: bytes::Bytes,
        err: crate::sip::framing::FrameError,
        peer: &Peer,
        reply: &ReplyTo,
    );
    /// A stream connection opened (inbound or outbound).
    fn on_open(&self, conn: &ConnHandle);
    /// A stream connection closed.
    fn on_closed(&self, conn: &ConnHandle, reason: &str);
    /// Where the messages of this handler's connections and sockets are recorded; asked
    /// once per connection or socket task, never per message.
    fn tap(&self) -> Option<std::sync::Arc<crate::trace::Tap>> {
        None
    }
}

/// Where TLS configurations come from; reloadable, so every handshake asks anew.
pub trait TlsSource: Send + Sync + 'static {
    /// The server configuration of an interface's TLS listener.
    fn server(&self, interface: Interface) -> Option<std::sync::Arc<rustls::ServerConfig>>;
    /// The client configuration for outbound TLS from an interface.
    fn client(&self, interface: Interface) -> Option<std::sync::Arc<rustls::ClientConfig>>;
    /// The identity proven by a verified certificate chain.
    fn identity(&self, certs: &[rustls_pki_types::CertificateDer<'_>]) -> PeerIdentity;
    /// A short reason for a failed inbound handshake, for the one log line.
    fn failure_reason(&self, err: &std::io::Error) -> String;
}
