#!/usr/bin/env python3
"""The floods of benches/soak.sh, one at a time: soak-floods.py KIND SECONDS HOST UDP_TCP_PORT TLS_PORT.

garbage    random datagrams of 200-1400 bytes to UDP at GARBAGE_RATE/s (default 15 000)
valid      distinct MESSAGE requests to UDP at VALID_RATE/s (default 5 000), never retransmitted
slowloris  LORIS connections (default 1 000) to TCP, each trickling a request a byte a second,
           reopened when the edge closes it
handshakes TLS connections that send half a ClientHello and are abandoned, HANDSHAKE_RATE/s
           (default 400), each left to the edge's handshake timeout

Sends from 127.0.0.9 so that the legitimate load (127.0.0.1) is another source.
"""
import os
import random
import selectors
import socket
import sys
import time

kind, seconds, host, port, tls_port = sys.argv[1], float(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
SRC = "127.0.0.9"
end = time.monotonic() + seconds
sent = 0


def connecting(to_port):
    """A non-blocking TCP socket from SRC, connecting to to_port."""
    c = socket.socket()
    c.bind((SRC, 0))
    c.setblocking(False)
    try:
        c.connect((host, to_port))
    except BlockingIOError:
        pass
    return c


def paced(rate, send_one):
    """Calls send_one rate times a second until the end, in 1 ms slices."""
    global sent
    start = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= end:
            return
        due = int((now - start) * rate)
        while sent < due:
            send_one(sent)
            sent += 1
        time.sleep(0.001)


if kind == "garbage":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((SRC, 0))
    pool = [os.urandom(random.randint(200, 1400)) for _ in range(256)]

    def one(i):
        try:
            s.sendto(pool[i & 255], (host, port))
        except OSError:
            pass

    paced(int(os.environ.get("GARBAGE_RATE", "15000")), one)
elif kind == "valid":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((SRC, 0))
    me = s.getsockname()[1]

    def one(i):
        m = (
            f"MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/UDP {SRC}:{me};branch=z9hG4bKsoak{i}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:x@fabrikam.test>;tag=f{i}\r\nTo: <sip:bob@contoso.test>\r\n"
            f"Call-ID: soak-{i}\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        ).encode()
        try:
            s.sendto(m, (host, port))
        except OSError:
            pass

    paced(int(os.environ.get("VALID_RATE", "5000")), one)
elif kind == "slowloris":
    head = b"MESSAGE sip:bob@contoso.test SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.9;branch=z9hG4bKloris\r\n" * 50
    conns = {}

    def opened():
        return connecting(port)

    want = int(os.environ.get("LORIS", "1000"))
    while time.monotonic() < end:
        while len(conns) < want:
            conns[opened()] = 0
        for c in list(conns):
            try:
                c.send(head[conns[c]:conns[c] + 1])
                conns[c] += 1
            except BlockingIOError:
                pass
            except OSError:
                c.close()
                del conns[c]
        time.sleep(1)
    for c in conns:
        c.close()
elif kind == "handshakes":
    # A TLS record header and the start of a ClientHello, then nothing.
    hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03])
    held = []

    def one(i):
        held.append([time.monotonic(), connecting(tls_port), False])

    rate = int(os.environ.get("HANDSHAKE_RATE", "400"))
    start = time.monotonic()
    while time.monotonic() < end:
        due = int((time.monotonic() - start) * rate)
        while sent < due:
            one(sent)
            sent += 1
        now = time.monotonic()
        keep = []
        for entry in held:
            t, c, greeted = entry
            if not greeted and now - t > 0.05:
                try:
                    c.send(hello)
                except OSError:
                    pass
                entry[2] = True
            if now - t > 10:
                c.close()
            else:
                keep.append(entry)
        held = keep
        time.sleep(0.005)
    for _, c, _ in held:
        c.close()
else:
    sys.exit(f"unknown flood {kind}")
print(f"{kind}: {sent} sent", file=sys.stderr)
