//! Step 8, forward: the ordered next hops, the connection each leaves over (the dialog
//! peer's own flow first, the pool's open connection, a new one), and failover to the next
//! target when a connection fails (RFC 3263 §4.3); a failure answers the request.

use super::*;

impl Core {
    /// The ordered next hops of a forwarded request.
    pub(super) fn targets_for(
        &self,
        m: &Message,
        route: &Route,
        plan: &RoutePlan,
    ) -> Result<Vec<Target>, Rejection> {
        match route {
            Route::NextHop(hop) => Ok(vec![Target {
                host: hop.host.clone(),
                port: hop.port,
                transport: hop.transport,
                tls_name: (hop.transport == Transport::Tls).then(|| hop.host.clone()),
                flow: None,
            }]),
            Route::Targets(list) if !list.is_empty() => Ok(list
                .iter()
                .map(|t| Target {
                    host: t.host.clone(),
                    port: t.port,
                    transport: t.transport,
                    tls_name: Some(t.tls_name.clone()),
                    flow: None,
                })
                .collect()),
            Route::Targets(_) => Err(Rejection::plain(Rule::NoTargets)),
            Route::RequestTarget => {
                let text = match &plan.next {
                    Some(r) => crate::sip::NameAddr::parse(m.text(r.clone())).map(|na| na.uri),
                    None => m.uri(),
                };
                let uri: Uri<'_> = text
                    .filter(|u| !u.host.is_empty())
                    .ok_or_else(|| Rejection::plain(Rule::UriScheme))?;
                let transport = match uri.param("transport") {
                    Some(t) => t.parse::<Transport>().map_err(|_| {
                        Rejection::plain(Rule::UnsupportedTransport)
                    })?,
                    None if uri.is_sips() => Transport::Tls,
                    None => Transport::Udp,
                };
                let port = uri.port.unwrap_or(if transport == Transport::Tls {
                    5061
                } else {
                    5060
                });
                let host = uri.host.to_ascii_lowercase();
                // Inside a dialog with an external peer, its flow and proven name win over
                // the URI: its Contact or Record-Route may be an address it never listens on,
                // or one its certificate does not name.
                if let Some(flow) = &plan.flow {
                    return Ok(vec![Target {
                        tls_name: (flow.transport == Transport::Tls)
                            .then(|| flow.name.clone().unwrap_or_else(|| host.clone())),
                        host,
                        port,
                        transport: flow.transport,
                        flow: Some(flow.addr),
                    }]);
                }
                Ok(vec![Target {
                    tls_name: (transport == Transport::Tls).then(|| host.clone()),
                    host,
                    port,
                    transport,
                    flow: None,
                }])
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward(
        &self,
        server_key: TxnKey,
        m: &Message,
        peer: &Peer,
        f: &policy::Forward,
        mut targets: Vec<Target>,
        plan: &RoutePlan,
        snap: &Arc<Snapshot>,
        decision: Option<PendingDecision>,
    ) {
        let exit = f.exit;
        let branch = self.new_branch(m, peer.interface);
        if m.wire().len() + 200 > snap.limits.udp_mtu {
            // RFC 3261 §18.1.1: a large request goes over a congestion-controlled transport.
            for t in targets.iter_mut().filter(|t| t.transport == Transport::Udp) {
                t.transport = Transport::Tcp;
            }
        }
        let bytes = self.rewrite_for(m, peer, f, &targets[0], &branch, plan, snap);
        let invite = m.method() == Method::Invite;
        let forwarded = if invite {
            Message::parse(bytes.clone(), false).ok()
        } else {
            None
        };
        let client_key = TxnKey::new(Side::Client, branch, method_key(m.method()));
        let fsm = ClientTxn::new(
            invite,
            targets[0].transport.is_stream(),
            TimerValues::from(&snap.timers),
            Instant::now(),
        );
        let deadline = fsm.deadline();
        let entry = ClientEntry {
            fsm,
            bytes: bytes.clone(),
            dest: None,
            server: server_key.clone(),
            forwarded,
            cancel_pending: false,
            retry: (targets.len() > 1).then(|| {
                Box::new(Retry {
                    request: m.clone(),
                    peer: peer.clone(),
                    forward: f.clone(),
                    plan: plan.clone(),
                    snap: snap.clone(),
                    remaining: targets[1..].to_vec(),
                })
            }),
            arrival: peer.interface,
            exit,
            domain: m
                .uri()
                .map(|u| u.host.to_ascii_lowercase())
                .unwrap_or_default(),
            target: targets[0].host.clone(),
            span: tracing::Span::current(),
            // === topology hiding: the Via lines the external side does not see ===
            hidden_via: topology::hides(peer.interface, exit).then(|| {
                topology::via_lines(m, build::received_edit(m, peer.addr).as_ref())
            }),
            response_trust: f.response_trust.clone(),
            requester: (peer.interface == Interface::External).then(|| peer.identity.clone()),
            partner: f.limit.as_ref().map(|l| l.partner.clone()),
        };
        if self
            .txns
            .insert(client_key.clone(), Entry::Client(entry), deadline)
            .is_err()
        {
            if let Some(d) = decision {
                self.keep_decision(&server_key, d);
            }
            return self.reject(&server_key, &Rejection::overloaded(), snap);
        }
        self.txns.with(&server_key, |e| {
            if let Entry::Server(s) = e {
                s.client = Some(client_key.clone());
                if decision.is_some() {
                    s.decision = decision;
                }
            }
            ((), None)
        });
        self.metrics.message(exit, Direction::Out, m.method());
        if self.try_send_flow(&client_key, exit, &targets[0], &bytes) {
            return;
        }
        if targets.len() == 1 {
            if let Ok(addr) = self.resolve_now(&targets[0], snap) {
                if self.try_send_now(&client_key, exit, &targets[0], addr, &bytes, snap) {
                    return;
                }
            }
        }
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        let snap = snap.clone();
        let span = tracing::Span::current();
        tokio::spawn(async move {
            let _entered = span.enter();
            me.connect_targets(client_key, exit, targets, bytes, snap)
                .await;
        });
    }

    /// Resolves without awaiting: IP literals and the static hosts table.
    pub(super) fn resolve_now(&self, t: &Target, snap: &Snapshot) -> Result<SocketAddr, Rejection> {
        resolve_static(&t.host, t.port, snap)
    }

    /// Resolves through the hosts table, then DNS A/AAAA.
    pub(super) async fn resolve_target(&self, t: &Target, snap: &Snapshot) -> Result<SocketAddr, Rejection> {
        resolve_address(&t.host, t.port, snap, self.resolver.as_deref()).await
    }

    pub(super) fn pool_key(exit: Interface, target: &Target, addr: SocketAddr) -> PoolKey {
        PoolKey {
            interface: exit,
            transport: target.transport,
            addr,
            server_name: if target.transport == Transport::Tls {
                target.tls_name.clone()
            } else {
                None
            },
        }
    }

    /// Sends over the flow the dialog's external peer used, while it lasts. False: there is
    /// none, and the target is connected to as usual (verified against the peer's name).
    pub(super) fn try_send_flow(&self, key: &TxnKey, exit: Interface, target: &Target, bytes: &Bytes) -> bool {
        let Some(addr) = target.flow else {
            return false;
        };
        let dest = match target.transport {
            Transport::Udp => match self.udp.get(&exit) {
                Some(socket) => ReplyTo::Datagram {
                    socket: socket.clone(),
                    to: addr,
                },
                None => return false,
            },
            t => match self.registry.find(t, addr) {
                Some(c) => ReplyTo::Stream(c),
                None => return false,
            },
        };
        self.set_dest(key, &dest);
        dest.send(bytes.clone()).is_ok()
    }

    /// Sends without awaiting when it can: UDP, or a pooled connection that is open, or a
    /// target inside its backoff window (answered at once). False: a connection is needed.
    pub(super) fn try_send_now(
        &self,
        key: &TxnKey,
        exit: Interface,
        target: &Target,
        addr: SocketAddr,
        bytes: &Bytes,
        snap: &Snapshot,
    ) -> bool {
        if target.transport == Transport::Udp {
            let Some(socket) = self.udp.get(&exit).cloned() else {
                let r = Rejection::plain(Rule::NoUdpOnInterface);
                self.fail_client(key, &r, snap);
                return true;
            };
            let dest = ReplyTo::Datagram { socket, to: addr };
            self.set_dest(key, &dest);
            if let Err(e) = dest.send(bytes.clone()) {
                tracing::info!(%addr, error = %e, "datagram send failed");
            }
            return true;
        }
        let pool_key = Self::pool_key(exit, target, addr);
        if let Some(c) = self.pool.reusable(&pool_key, snap.connections_per_next_hop(exit)) {
            let dest = ReplyTo::Stream(c);
            self.set_dest(key, &dest);
            if dest.send(bytes.clone()).is_ok() {
                return true;
            }
        }
        if let Some(r) = self.backing_off(&pool_key) {
            // The peer failed moments ago: answer at once instead of hammering it.
            self.fail_client(key, &r, snap);
            return true;
        }
        false
    }

    /// Tries the targets in order (SRV failover): resolve, connect, send. When all fail,
    /// the last failure answers the request.
    pub(super) async fn connect_targets(
        &self,
        key: TxnKey,
        exit: Interface,
        targets: Vec<Target>,
        bytes: Bytes,
        snap: Arc<Snapshot>,
    ) {
        let mut last: Option<Rejection> = None;
        for t in &targets {
            let addr = match self.resolve_target(t, &snap).await {
                Ok(a) => a,
                Err(r) => {
                    last = Some(r);
                    continue;
                }
            };
            if t.transport == Transport::Udp {
                self.try_send_now(&key, exit, t, addr, &bytes, &snap);
                return;
            }
            let pool_key = Self::pool_key(exit, t, addr);
            if let Some(r) = self.backing_off(&pool_key) {
                last = Some(r);
                continue;
            }
            let Some(ctx) = self.connect_context(exit, &snap) else {
                return;
            };
            match self.pool.get_or_connect(&pool_key, &ctx).await {
                Ok(c) => {
                    self.connect_succeeded(&pool_key);
                    let dest = ReplyTo::Stream(c);
                    self.set_dest(&key, &dest);
                    if let Err(e) = dest.send(bytes) {
                        tracing::info!(target = %t.host, error = %e, "send failed");
                        let r = Rejection::plain(Rule::SendFailed);
                        self.fail_client(&key, &r, &snap);
                    }
                    return;
                }
                Err(e) => {
                    tracing::info!(target = %t.host, %addr, error = %e, "outbound connection failed");
                    let r = respond::connect_failure(&e, &t.host, exit, t.transport);
                    self.connect_failed(&pool_key, &r);
                    last = Some(r);
                }
            }
        }
        let r = last.unwrap_or_else(|| Rejection::plain(Rule::NoTarget));
        self.fail_client(&key, &r, &snap);
    }

    /// The stored failure of a target still inside its reconnect backoff window.
    pub(super) fn backing_off(&self, key: &PoolKey) -> Option<Rejection> {
        let m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (until, _, r) = m.get(key)?;
        (Instant::now() < *until).then(|| r.clone())
    }

    /// Starts or lengthens the backoff: 250 ms, doubling per consecutive failure, at most 30 s.
    pub(super) fn connect_failed(&self, key: &PoolKey, r: &Rejection) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let count = m.get(key).map_or(0, |(_, c, _)| *c) + 1;
        let wait = std::time::Duration::from_millis(250 * (1u64 << (count - 1).min(7)))
            .min(std::time::Duration::from_secs(30));
        m.insert(key.clone(), (Instant::now() + wait, count, r.clone()));
        if m.len() > 10_000 {
            let now = Instant::now();
            m.retain(|_, (until, _, _)| *until > now);
        }
    }

    /// Forgets every target's reconnect backoff, so the next request connects at once
    /// (the lab calls it when a peer's fault changes).
    pub fn reset_backoff(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub(super) fn connect_succeeded(&self, key: &PoolKey) {
        let mut m = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(key);
    }

    pub(super) fn connect_context(&self, exit: Interface, snap: &Snapshot) -> Option<ConnectContext> {
        Some(ConnectContext {
            local_ip: snap.interface(exit).address,
            connect_timeout: snap.limits.connect_timeout,
            handshake_timeout: snap.limits.tls_handshake_timeout,
            max_per_key: snap.connections_per_next_hop(exit),
            settings: stream_settings(snap),
            keepalive: snap.limits.keepalive_interval,
            tls: self.tls.clone(),
            handler: self.handler()?,
            shutdown: self.conn_shutdown.clone(),
            metrics: self.metrics.clone(),
        })
    }

    pub(super) fn set_dest(&self, key: &TxnKey, dest: &ReplyTo) {
        self.txns.with(key, |e| {
            if let Entry::Client(c) = e {
                c.dest = Some(dest.clone());
            }
            ((), None)
        });
    }

    /// A client transaction could not even send: answer its server transaction.
    pub(super) fn fail_client(&self, key: &TxnKey, r: &Rejection, snap: &Snapshot) {
        if let Some(Entry::Client(c)) = self.txns.remove(key) {
            self.reject(&c.server, r, snap);
        }
    }

    pub(super) fn send_stateless(&self, exit: Interface, target: &Target, bytes: Bytes) {
        if let Some(addr) = target.flow {
            let sent = match target.transport {
                Transport::Udp => self
                    .udp
                    .get(&exit)
                    .is_some_and(|s| conn::send_datagram(s, addr, bytes.clone()).is_ok()),
                t => self
                    .registry
                    .find(t, addr)
                    .is_some_and(|c| c.send(bytes.clone()).is_ok()),
            };
            if sent {
                return;
            }
        }
        let snap = self.live.load();
        let Ok(addr) = self.resolve_now(target, &snap) else {
            // A name (e.g. the Contact of a 2xx an ACK goes to): resolve it off the
            // read path, then send, rather than drop the ACK.
            let Some(me) = self.me.get().and_then(Weak::upgrade) else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                let snap = me.live.load();
                match me.resolve_target(&target, &snap).await {
                    Ok(addr) => me.send_stateless_to(exit, &target, addr, bytes, &snap),
                    Err(r) => {
                        tracing::info!(host = %target.host, rule = r.rule.name(), "stateless request dropped: no address")
                    }
                }
            });
            return;
        };
        self.send_stateless_to(exit, target, addr, bytes, &snap);
    }

    /// [`send_stateless`](Self::send_stateless) once the target's address is known.
    pub(super) fn send_stateless_to(
        &self,
        exit: Interface,
        target: &Target,
        addr: SocketAddr,
        bytes: Bytes,
        snap: &Snapshot,
    ) {
        if target.transport == Transport::Udp {
            if let Some(s) = self.udp.get(&exit) {
                let _ = conn::send_datagram(s, addr, bytes);
            }
            return;
        }
        let pool_key = Self::pool_key(exit, target, addr);
        if let Some(c) = self
            .pool
            .get(&pool_key)
            .or_else(|| self.registry.find(target.transport, addr))
        {
            let _ = c.send(bytes);
            return;
        }
        let Some(ctx) = self.connect_context(exit, snap) else {
            return;
        };
        let Some(me) = self.me.get().and_then(Weak::upgrade) else {
            return;
        };
        tokio::spawn(async move {
            if let Ok(c) = me.pool.get_or_connect(&pool_key, &ctx).await {
                let _ = c.send(bytes);
            }
        });
    }
}

/// The address of a next hop without awaiting: an IP literal, or the static hosts table.
pub fn resolve_static(host: &str, port: u16, snap: &Snapshot) -> Result<SocketAddr, Rejection> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match snap.hosts.get(host).and_then(|v| v.first()) {
        Some(ip) => Ok(SocketAddr::new(*ip, port)),
        None => Err(Rejection::dns_no_address(host)),
    }
}

/// The address of a next hop: [`resolve_static`], then DNS A/AAAA (the first address).
/// The proxy and `check-partner` resolve through this one function.
pub async fn resolve_address(
    host: &str,
    port: u16,
    snap: &Snapshot,
    resolver: Option<&dyn crate::dns::Resolve>,
) -> Result<SocketAddr, Rejection> {
    if let Ok(a) = resolve_static(host, port, snap) {
        return Ok(a);
    }
    let Some(resolver) = resolver else {
        return Err(Rejection::dns_no_address(host));
    };
    match resolver.ip(host).await {
        Ok(ips) if !ips.is_empty() => Ok(SocketAddr::new(ips[0], port)),
        Ok(_) => Err(Rejection::dns_no_address(host)),
        Err(e) => {
            tracing::info!(%host, error = %e, "address lookup failed");
            Err(Rejection::dns_no_address(host))
        }
    }
}

/// Where a forwarded request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) transport: Transport,
    /// The name the server's certificate must carry (SNI), for TLS.
    pub(super) tls_name: Option<String>,
    /// The address of the connection (or datagram source) the dialog's external peer used:
    /// reached over that flow while it lasts (RFC 5923 / RFC 5626), whatever the URI says.
    pub(super) flow: Option<SocketAddr>,
}

/// A forwarded request with targets left to try (RFC 3263 §4.3: on 503, the next one).
pub(super) struct Retry {
    pub(super) request: Message,
    pub(super) peer: Peer,
    pub(super) forward: policy::Forward,
    pub(super) plan: RoutePlan,
    pub(super) snap: Arc<Snapshot>,
    pub(super) remaining: Vec<Target>,
}

