//! The floor: a relay that does only the syscalls (and, over TLS, the record crypto) and
//! no SIP work at all, to measure what any proxy on this machine could reach.
//!
//! ```text
//! cargo bench --bench floor_relay -- --transport udp|tcp|tls [--listen 127.0.0.1:5060]
//!     [--to 127.0.0.1:5070] [--pool-name pool.contoso.test]
//! ```
//!
//! UDP: every datagram from the pool address goes to the last client seen, every other
//! datagram goes to the pool. TCP/TLS: each accepted connection gets one connection to the
//! pool and bytes are pumped both ways unchanged (no framing, no parsing). TLS is mutual on
//! both legs with the lab certificates (inbound as `accessedge.contoso.test`, outbound as
//! `edge-int.contoso.test` to `pool.contoso.test`), like the edge. It answers nothing
//! itself, so SIP responses still come from the pool: drive it with `sipedge load` and a
//! `sipedge sink` as the pool. Runs until killed.

use std::net::SocketAddr;
use std::path::Path;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Udp,
    Tcp,
    Tls,
}

struct Args {
    transport: Transport,
    listen: SocketAddr,
    to: SocketAddr,
    pool_name: String,
}

fn parse_args() -> Result<Args, String> {
    let mut transport = None;
    let mut listen: SocketAddr = "127.0.0.1:5060".parse().map_err(|e| format!("{e}"))?;
    let mut to: SocketAddr = "127.0.0.1:5070".parse().map_err(|e| format!("{e}"))?;
    let mut pool_name = "pool.contoso.test".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--transport" => {
                transport = Some(match value("--transport")?.as_str() {
                    "udp" => Transport::Udp,
                    "tcp" => Transport::Tcp,
                    "tls" => Transport::Tls,
                    other => return Err(format!("--transport {other}: udp, tcp or tls")),
                })
            }
            "--listen" => listen = value("--listen")?.parse().map_err(|e| format!("{e}"))?,
            "--to" => to = value("--to")?.parse().map_err(|e| format!("{e}"))?,
            "--pool-name" => pool_name = value("--pool-name")?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        transport: transport.ok_or("--transport udp|tcp|tls is required")?,
        listen,
        to,
        pool_name,
    })
}

async fn udp(listen: SocketAddr, to: SocketAddr) -> std::io::Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    let mut client: Option<SocketAddr> = None;
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        let dest = if from == to {
            match client {
                Some(c) => c,
                None => continue,
            }
        } else {
            client = Some(from);
            to
        };
        let _ = socket.send_to(&buf[..n], dest).await;
    }
}

async fn pump<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (a, b);
    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
}

fn material(certs: &Path, name: &str) -> Result<sipedge::tls::TlsMaterial, String> {
    sipedge::tls::TlsMaterial::load(
        &certs.join(format!("{name}.crt")),
        &certs.join(format!("{name}.key")),
        &[certs.join("ca.crt")],
        &[],
    )
    .map_err(|e| format!("{name}: {e}"))
}

async fn stream(
    transport: Transport,
    listen: SocketAddr,
    to: SocketAddr,
    pool_name: String,
) -> Result<(), String> {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let (acceptor, connector) = if transport == Transport::Tls {
        let server =
            sipedge::tls::server_config(&material(&certs, "accessedge.contoso.test")?, true)
                .map_err(|e| e.to_string())?;
        let client = sipedge::tls::client_config(&material(&certs, "edge-int.contoso.test")?)
            .map_err(|e| e.to_string())?;
        (
            Some(tokio_rustls::TlsAcceptor::from(server)),
            Some(tokio_rustls::TlsConnector::from(client)),
        )
    } else {
        (None, None)
    };
    let pool_name = ServerName::try_from(pool_name).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(listen).await.map_err(|e| e.to_string())?;
    loop {
        let (inbound, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = inbound.set_nodelay(true);
        let (acceptor, connector, pool_name) =
            (acceptor.clone(), connector.clone(), pool_name.clone());
        tokio::spawn(async move {
            let Ok(outbound) = TcpStream::connect(to).await else {
                return;
            };
            let _ = outbound.set_nodelay(true);
            match (acceptor, connector) {
                (Some(acceptor), Some(connector)) => {
                    let (Ok(inbound), Ok(outbound)) = (
                        acceptor.accept(inbound).await,
                        connector.connect(pool_name, outbound).await,
                    ) else {
                        return;
                    };
                    pump(inbound, outbound).await;
                }
                _ => pump(inbound, outbound).await,
            }
        });
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("floor_relay: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match args.transport {
            Transport::Udp => udp(args.listen, args.to).await.map_err(|e| e.to_string()),
            t => stream(t, args.listen, args.to, args.pool_name).await,
        }
    });
    if let Err(e) = result {
        eprintln!("floor_relay: {e}");
        std::process::exit(1);
    }
}
