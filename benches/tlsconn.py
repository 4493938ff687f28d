#!/usr/bin/env python3
"""benches/tlsconn.py: new TLS connections per second, full or resumed.

Used by benches/run.sh for the `tlsnew` and `tlsresume` scenarios. Each of
--clients processes opens one TLS connection after another to --addr: TCP
connect, TLS handshake (sending SNI --sni, verifying nothing), then it reads
what the server sent after the handshake (TLS 1.3 session tickets: it waits
for the first, at most 1 s), sends close_notify and closes. No HTTP request is
sent, so the proxy does a handshake and nothing else. With --mode resume, each
handshake offers the session of the previous connection of the same process
(the first connection, before the clock starts, is a full handshake that gets
one). --tls picks the version, the only one offered:
    1.3     TLS 1.3 (resumption: a session ticket, PSK with (EC)DHE)
    1.2     TLS 1.2 (resumption: a session ticket, RFC 5077)
    1.2id   TLS 1.2 without the ticket extension (resumption: session ID,
            which needs a server-side session cache)

Why not `openssl s_time -reuse`: it reads nothing after the handshake unless
it sends an HTTP request (-www), so it never receives a TLS 1.3 ticket and
never resumes TLS 1.3; with -www every connection also carries a proxied
request. Why read the tickets in both modes: a client that closes with them
unread makes its kernel answer them with a RST, which the server may treat
(and log) as a failed handshake.

All processes start together after their first connection and stop after
--duration seconds; each stops after --max-connections, and each connection
gives up after --timeout seconds. Only loopback addresses are accepted.

stdout, at the end, one line:
    RESULT connections=N total_connections=N seconds=S conn_s=X reused=N
        failed=N no_ticket=N version=V cipher=C ticket=yes|no p50_ms=..
        p90_ms=.. p99_ms=.. max_ms=..
(connections: in the timed window; total_connections: also the unmeasured
first one of each process; reused: handshakes the server resumed; latencies:
TCP connect + handshake, client side), then up to 5 lines `error: ...`.
SIGTERM stops every process at once.
"""

import argparse
import ipaddress
import json
import math
import os
import select
import signal
import socket
import ssl
import sys
import time


def parse_addr(text):
    host, sep, port = text.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text}: expected host:port")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: expected an IP address") from None
    if not ip.is_loopback:
        raise argparse.ArgumentTypeError(f"{text}: only loopback addresses are allowed")
    return host, int(port)


def make_context(tls):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # like s_time and wrk: no verification cost
    version = ssl.TLSVersion.TLSv1_3 if tls == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = version
    ctx.maximum_version = version
    if tls == "1.2id":
        ctx.options |= ssl.OP_NO_TICKET  # no ticket extension: the server must use session IDs
    return ctx


def one_connection(ctx, addr, sni, session, timeout):
    """One connection; returns (latency s, reused, version, cipher, session or None, had ticket)."""
    start = time.monotonic()
    deadline = start + timeout
    sock = socket.create_connection(addr, timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = ctx.wrap_socket(sock, server_hostname=sni, session=session)
    except BaseException:
        sock.close()
        raise
    try:
        latency = time.monotonic() - start
        reused = tls.session_reused
        version = tls.version()
        cipher = tls.cipher()[0]
        # Read what came after the handshake (TLS 1.3: NewSessionTicket). For
        # TLS 1.2 the ticket, if any, came inside the handshake.
        tls.setblocking(False)
        if version == "TLSv1.3":
            wait_until = min(deadline, time.monotonic() + 1.0)
            while True:
                try:
                    if tls.recv(4096) == b"":
                        break  # the server closed
                except ssl.SSLWantReadError:
                    pass
                current = tls.session
                if current is not None and current.has_ticket:
                    break
                left = wait_until - time.monotonic()
                if left <= 0:
                    break
                select.select([tls], [], [], left)
        current = tls.session
        ticket = current is not None and current.has_ticket
        try:
            tls.unwrap()  # sends close_notify; non-blocking, so it does not wait for the server's
        except (ssl.SSLError, OSError):
            pass
        return latency, reused, version, cipher, current, ticket
    finally:
        tls.close()


def client(args, index, start, end, out):
    """One process: writes its counts and latencies as JSON to the fd `out`."""
    ctx = make_context(args.tls)
    res = {"connections": 0, "total": 0, "reused": 0, "failed": 0, "no_ticket": 0,
           "version": "", "cipher": "", "ticket": False, "lat": [], "errors": []}
    session = None

    def attempt(measured):
        nonlocal session
        res["total"] += 1
        try:
            latency, reused, version, cipher, current, ticket = one_connection(
                ctx, args.addr, args.sni, session if args.mode == "resume" else None, args.timeout)
        except (OSError, ssl.SSLError) as e:  # ssl.SSLError is an OSError; both for clarity
            res["failed"] += 1
            if len(res["errors"]) < 5:
                res["errors"].append(f"client {index}: {type(e).__name__}: {e}")
            return
        res["version"], res["cipher"] = version, cipher
        res["ticket"] = res["ticket"] or ticket
        if version == "TLSv1.3" and not ticket:
            res["no_ticket"] += 1
        if args.mode == "resume" and current is not None:
            # the newest session (TLS 1.3: a fresh ticket; 1.2: the same ID or a renewed ticket)
            session = current
        if measured:
            res["connections"] += 1
            res["reused"] += int(reused)
            res["lat"].append(latency)

    attempt(False)  # unmeasured: a full handshake (resume: it gets the session to offer)
    now = time.monotonic()
    if now < start:
        time.sleep(start - now)
    while res["connections"] + res["failed"] < args.max_connections:
        if time.monotonic() >= end:
            break
        attempt(True)
    os.write(out, json.dumps(res).encode())


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))  # nearest rank
    return sorted_values[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--addr", type=parse_addr, required=True, help="loopback host:port")
    ap.add_argument("--mode", choices=["new", "resume"], required=True)
    ap.add_argument("--tls", choices=["1.3", "1.2", "1.2id"], required=True)
    ap.add_argument("--sni", default="odoo.mycompany.com")
    ap.add_argument("--clients", type=int, default=1, help="processes (1-16)")
    ap.add_argument("--duration", type=float, required=True, help="seconds (0.5-3600)")
    ap.add_argument("--max-connections", type=int, default=10_000_000, help="per process")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per connection")
    args = ap.parse_args()
    if not 1 <= args.clients <= 16:
        ap.error("--clients: 1 to 16")
    if not 0.5 <= args.duration <= 3600:
        ap.error("--duration: 0.5 to 3600")

    # Every process makes its first (unmeasured) connection, then all start
    # the clock together.
    start = time.monotonic() + 0.5
    end = start + args.duration
    children = []  # (pid, read fd)

    def stop(signum, _frame):
        for pid, _ in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for i in range(args.clients):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.close(r)
            code = 0
            try:
                client(args, i, start, end, w)
            except BaseException as e:  # report, never fall back into the parent's code
                print(f"tlsconn: client {i}: {type(e).__name__}: {e}", file=sys.stderr)
                code = 1
            finally:
                os._exit(code)
        os.close(w)
        children.append((pid, r))

    results, failed_children = [], 0
    for pid, r in children:
        chunks = []
        while True:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        _, status = os.waitpid(pid, 0)
        if status != 0 or not chunks:
            failed_children += 1
            continue
        results.append(json.loads(b"".join(chunks)))
    if failed_children:
        print(f"tlsconn: {failed_children} client process(es) failed", file=sys.stderr)
        sys.exit(1)

    lat = sorted(x for res in results for x in res["lat"])
    conns = sum(res["connections"] for res in results)
    total = sum(res["total"] for res in results)
    versions = sorted({res["version"] for res in results if res["version"]})
    ciphers = sorted({res["cipher"] for res in results if res["cipher"]})
    print(
        f"RESULT connections={conns} total_connections={total} seconds={args.duration:g} "
        f"conn_s={conns / args.duration:.1f} reused={sum(res['reused'] for res in results)} "
        f"failed={sum(res['failed'] for res in results)} "
        f"no_ticket={sum(res['no_ticket'] for res in results)} "
        f"version={','.join(versions) or '-'} cipher={','.join(ciphers) or '-'} "
        f"ticket={'yes' if any(res['ticket'] for res in results) else 'no'} "
        f"p50_ms={percentile(lat, 50) * 1000:.3f} p90_ms={percentile(lat, 90) * 1000:.3f} "
        f"p99_ms={percentile(lat, 99) * 1000:.3f} max_ms={(lat[-1] if lat else float('nan')) * 1000:.3f}")
    for res in results:
        for e in res["errors"]:
            print(f"error: {e}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
