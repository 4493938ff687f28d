#!/usr/bin/env python3
"""benches/reportload.py: keep N long "report" requests in flight on one node.

Used by benches/run.sh for the `report` scenario: N loops, each sending one
GET (Connection: close) to the node directly, reading the reply to the end,
and sending the next one at once, so N of the node's prefork workers stay
busy. With --stagger S, loop i starts i*S/N seconds late, so the requests end
at different times, as independent users' reports would. Every loop is bounded: no request starts after --duration seconds,
each loop sends at most --max-requests, and each request gives up after
--timeout seconds. Only loopback addresses are accepted.

stdout: one line per finished request,
    <start epoch s> <end epoch s> loop=<i> status=<HTTP code or error:...>
--status FILE is rewritten (atomically) every 100 ms with
    in_flight=<n> sent=<n> done=<n> ok=<n> failed=<n>
The process exits once every loop has ended; SIGTERM stops it at once.
"""

import argparse
import ipaddress
import os
import socket
import sys
import threading
import time

MAX_REPLY = 1 << 20  # the mock's echo is ~500 bytes; never read more than this


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


class Counters:
    def __init__(self):
        self.lock = threading.Lock()
        self.in_flight = self.sent = self.done = self.ok = self.failed = 0

    def line(self):
        with self.lock:
            return (f"in_flight={self.in_flight} sent={self.sent} done={self.done} "
                    f"ok={self.ok} failed={self.failed}\n")


def one_request(host, port, request, timeout):
    """Sends one request and reads the reply to EOF; returns the status code or error:..."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            reply = b""
            while len(reply) < MAX_REPLY:
                left = deadline - time.monotonic()
                if left <= 0:
                    return "error:timeout"
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except socket.timeout:
        return "error:timeout"
    except OSError as e:
        return f"error:{type(e).__name__}"
    first = reply.split(b"\r\n", 1)[0].split()
    if len(first) >= 2 and first[0].startswith(b"HTTP/") and first[1].isdigit():
        return first[1].decode()
    return "error:bad-reply"


def loop(i, args, counters, deadline, out_lock):
    host, port = args.addr
    time.sleep(min(i * args.stagger / args.concurrency, max(0.0, deadline - time.monotonic())))
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"User-Agent: odoo-edge-bench-reportload\r\nConnection: close\r\n\r\n").encode()
    for _ in range(args.max_requests):
        if time.monotonic() >= deadline:
            break
        with counters.lock:
            counters.in_flight += 1
            counters.sent += 1
        start = time.time()
        status = one_request(host, port, request, args.timeout)
        end = time.time()
        with counters.lock:
            counters.in_flight -= 1
            counters.done += 1
            if status == "200":
                counters.ok += 1
            else:
                counters.failed += 1
        with out_lock:
            print(f"{start:.3f} {end:.3f} loop={i} status={status}", flush=True)
        if status != "200":
            time.sleep(0.2)  # no tight loop against a node that refuses


def write_status(path, counters):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(counters.line())
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", type=parse_addr, required=True, help="node host:port (loopback)")
    p.add_argument("--path", required=True, help="request target, e.g. /x?mock_sleep=5000")
    p.add_argument("--concurrency", type=int, default=4, help="requests kept in flight")
    p.add_argument("--duration", type=float, required=True, help="seconds; no request starts after")
    p.add_argument("--max-requests", type=int, required=True, help="requests per loop, at most")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--stagger", type=float, default=0.0,
                   help="seconds over which the loops' first requests are spread")
    p.add_argument("--status", required=True, help="file rewritten with the counters")
    args = p.parse_args()
    if not 1 <= args.concurrency <= 256:
        p.error("--concurrency must be in 1..256")
    if not 0 < args.duration <= 86400 or not 0 < args.timeout <= 3600:
        p.error("--duration and --timeout must be positive and bounded")
    if not 0 <= args.stagger <= args.duration:
        p.error("--stagger must be in 0..duration")
    if not args.path.startswith("/"):
        p.error("--path must start with /")

    counters = Counters()
    out_lock = threading.Lock()
    deadline = time.monotonic() + args.duration
    threads = [threading.Thread(target=loop, args=(i, args, counters, deadline, out_lock), daemon=True)
               for i in range(args.concurrency)]
    for t in threads:
        t.start()
    hard_stop = deadline + args.timeout + 5
    while any(t.is_alive() for t in threads) and time.monotonic() < hard_stop:
        write_status(args.status, counters)
        time.sleep(0.1)
    write_status(args.status, counters)
    print(f"reportload: finished, {counters.line().strip()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
