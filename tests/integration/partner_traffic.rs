//! Traffic toward and from federated partners as a whole: how many TLS connections the
//! edge opens per partner (OutgoingTlsCountForFederatedPartners), and the discovered
//! partners it throttles as suspicious, reports and puts on its watch list.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

use crate::federation::{msg, FedLab, BASE_RECORDS};
use crate::support::*;
use crate::tls::{tls_server, Pki};
use sipedge::transport::Interface;

type PeerStream = StreamConn<tokio_rustls::server::TlsStream<TcpStream>>;

/// A partner edge on 127.0.0.6 that completes each TLS handshake and then reads nothing
/// (a small receive buffer, so the edge's writes back up quickly): the edge can only
/// relieve the load by opening more connections. Each accepted connection is counted and
/// handed to the test, which may start reading it later.
async fn stalled_partner(
    pki: &Pki,
) -> (u16, Arc<AtomicUsize>, mpsc::UnboundedReceiver<PeerStream>) {
    let (unused, acceptor) = tls_server(pki, "127.0.0.6", "sip.northwind.test").await;
    drop(unused);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.6:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(s) = acceptor.accept(tcp).await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            if tx.send(StreamConn::new(s)).is_err() {
                return;
            }
        }
    });
    (port, accepted, rx)
}

/// Answers 200 to every request on `conn`, until it closes.
fn answer_all(mut conn: PeerStream) {
    tokio::spawn(async move {
        while let Some(m) = conn.try_recv(std::time::Duration::from_secs(30)).await {
            if !m.starts_with("SIP/2.0") {
                conn.send(&response(&m, 200, "OK", &[])).await;
            }
        }
    });
}

#[tokio::test]
async fn outgoing_tls_count_for_federated_partners_is_how_many_connections_a_partner_gets_under_load(
) {
    const COUNT: usize = 2;
    let pki = Pki::new();
    let (port, accepted, mut streams) = stalled_partner(&pki).await;
    let records = format!(
        "{BASE_RECORDS}
_sipfederationtls._tcp.northwind.test. IN SRV 10 100 {port} sip.northwind.test.
sip.northwind.test. IN A 127.0.0.6
"
    );
    let lab = FedLab::start(pki, &records, |f| {
        f.replace(
            "outgoing_tls_count_for_federated_partners = 4",
            &format!("outgoing_tls_count_for_federated_partners = {COUNT}"),
        )
    })
    .await;
    let mut alice = lab
        .connect(Interface::Internal, &["pool.contoso.test"])
        .await;
    let (from, to) = ("sip:alice@contoso.test", "sip:dan@northwind.test");

    // Load until COUNT connections are open, then a thousand requests more, all decided
    // while the partner still reads nothing: every connection is backed up by then, so
    // one more would be opened if the count allowed it.
    let mut sent = 0;
    let mut extra = None;
    while extra.is_none_or(|e| sent < e) {
        assert!(
            sent < 20_000,
            "{} connection(s) after {sent} requests",
            accepted.load(Ordering::SeqCst)
        );
        alice
            .send(&msg("MESSAGE", from, to, &format!("load{sent}"), &[]))
            .await;
        sent += 1;
        if extra.is_none() && accepted.load(Ordering::SeqCst) >= COUNT {
            extra = Some(sent + 1000);
        }
    }
    let relayed = || {
        let text = lab.edge.metrics_text();
        let label = "interface=\"external\",direction=\"out\",method=\"MESSAGE\"";
        crate::metrics::sum(&text, "sipedge_messages_total", label)
    };
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while relayed() < sent as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {sent} relayed",
            relayed()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // The partner catches up: every request is answered, so every one of them has gone
    // out over a connection the partner accepted.
    let mut open = Vec::new();
    while let Ok(s) = streams.try_recv() {
        open.push(s);
    }
    for s in open {
        answer_all(s);
    }
    let mut answered = 0;
    while answered < sent {
        let r = alice.recv().await;
        assert_eq!(status_of(&r), 200, "{r}");
        answered += 1;
        while let Ok(s) = streams.try_recv() {
            answer_all(s);
        }
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        COUNT,
        "connections the partner accepted for {sent} requests"
    );
}
