//! Abuse of the TLS listener: HTTP/2 rapid reset (CVE-2023-44487), a
//! CONTINUATION flood, the concurrent-stream cap, a websocket over TLS and
//! request trailers from an HTTP/2 client. Certificates are made at test time.
//!
//! Some tests speak HTTP/2 with the `h2` client; the floods write frames by
//! hand (RFC 9113 §4.1: a 9-byte header of 24-bit length, type, flags and a
//! 31-bit stream id) with the smallest HPACK that a server must accept.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::tls::{Pki, tls_listener};
use common::{Cluster, Echo, wait_until};
use futures_util::future::poll_fn;
use futures_util::{SinkExt as _, StreamExt as _};
use h2::Reason;
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use odoo_edge::mock_odoo::{MockConfig, Mode, Role};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Upper bound for any single wait in this file; each test stays near 5 s.
const BOUND: Duration = Duration::from_secs(3);

/// The name every certificate here is issued for.
const HOST: &str = "erp.example.com";

/// A PKI with one certificate for [`HOST`], and the listener entry serving it.
fn erp_pki() -> (Pki, String) {
    let pki = Pki::new();
    pki.issue("erp", &[HOST]);
    let listener = tls_listener(&pki, &["erp"], "");
    (pki, listener)
}

/// TLS to `addr` for [`HOST`], offering `alpn`; the handshake within [`BOUND`].
async fn connect(addr: SocketAddr, pki: &Pki, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("connect to the edge");
    let name = ServerName::try_from(HOST.to_owned()).expect("a DNS name");
    timeout(BOUND, pki.client(alpn).connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

// === HTTP/2 with the h2 client ===

/// An HTTP/2 connection over TLS (ALPN h2); the connection runs on its own task.
async fn h2_connect(
    addr: SocketAddr,
    pki: &Pki,
) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    let tls = connect(addr, pki, &[b"h2"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "ALPN must choose h2"
    );
    let (sender, conn) = timeout(BOUND, h2::client::handshake(tls))
        .await
        .expect("HTTP/2 handshake in time")
        .expect("HTTP/2 handshake");
    (sender, tokio::spawn(conn))
}

/// `GET https://HOST{path}` as an `h2` request head.
fn h2_get(path: &str) -> Request<()> {
    Request::get(format!("https://{HOST}{path}"))
        .body(())
        .expect("a valid request")
}

/// Sends `request` (with `body` if any, then `trailers` if any) and reads the
/// whole reply, within [`BOUND`].
async fn h2_exchange(
    sender: &mut SendRequest<Bytes>,
    request: Request<()>,
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
) -> (StatusCode, Bytes) {
    timeout(BOUND, async {
        poll_fn(|cx| sender.poll_ready(cx))
            .await
            .expect("the connection must take a request");
        let end_with_head = body.is_none() && trailers.is_none();
        let (response, mut stream) = sender
            .send_request(request, end_with_head)
            .expect("send the request head");
        if let Some(body) = body {
            stream
                .send_data(body, trailers.is_none())
                .expect("send the body");
        }
        if let Some(trailers) = trailers {
            stream.send_trailers(trailers).expect("send the trailers");
        }
        let response = response.await.expect("a reply head");
        let status = response.status();
        let mut body = response.into_body();
        let mut out = BytesMut::new();
        // Bounded by BOUND (the outer timeout) and by the reply's length.
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("a reply body chunk");
            let _ = body.flow_control().release_capacity(chunk.len());
            out.extend_from_slice(&chunk);
        }
        (status, out.freeze())
    })
    .await
    .expect("the reply must arrive in time")
}

/// A `GET` on a brand-new HTTP/2 connection: the edge still serves after an attack.
async fn fresh_h2_get(addr: SocketAddr, pki: &Pki, path: &str) -> (StatusCode, Bytes) {
    let (mut sender, conn) = h2_connect(addr, pki).await;
    let reply = h2_exchange(&mut sender, h2_get(path), None, None).await;
    drop(sender);
    conn.abort();
    reply
}

// === HTTP/2 by hand ===

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

// SETTINGS identifiers (RFC 9113 §6.5.2).
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

// Error codes (RFC 9113 §7).
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 24-bit length, type, flags, stream id (reserved bit clear), payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("a small payload");
    assert!(len < 1 << 24, "a frame payload fits 24 bits");
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK "literal header field without indexing — new name" (RFC 7541
/// §6.2.2): `0x00`, then name and value as raw strings (Huffman bit clear,
/// 7-bit length). Both must be under 127 bytes so each length is one byte.
fn hpack_literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    assert!(name.len() < 127 && value.len() < 127, "one-byte lengths");
    let mut out = vec![0x00, name.len() as u8];
    out.extend_from_slice(name);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
    out
}

/// HPACK `:method GET` and `:method POST`: static-table indexes 2 and 3,
/// sent as one byte each (`0x80 | index`, RFC 7541 §6.1).
const GET: u8 = 0x82;
const POST: u8 = 0x83;

/// The header block of `<method> https://HOST/web/raw`: `:scheme https` is
/// static index 7 (`0x87`); `:authority` and `:path` are literals without
/// indexing on static names 1 and 4 (`0x01` / `0x04`, then the value with a
/// one-byte length).
fn hpack_request(method: u8) -> Vec<u8> {
    let mut out = vec![method, 0x87, 0x01, HOST.len() as u8];
    out.extend_from_slice(HOST.as_bytes());
    out.extend_from_slice(&[0x04, 8]);
    out.extend_from_slice(b"/web/raw");
    out
}

/// A SETTINGS payload as (identifier, value) pairs.
fn settings(payload: &[u8]) -> Vec<(u16, u32)> {
    payload
        .chunks_exact(6)
        .map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
        .collect()
}

/// A GOAWAY payload: last stream id, error code and debug data (RFC 9113 §6.8).
fn parse_goaway(payload: &[u8]) -> (u32, u32, String) {
    assert!(payload.len() >= 8, "a GOAWAY carries 8 bytes at least");
    let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff;
    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
    (
        last,
        code,
        String::from_utf8_lossy(&payload[8..]).into_owned(),
    )
}

/// One frame as the server sent it.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits server bytes into frames.
struct FrameReader<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: Vec::new(),
        }
    }

    /// The next frame; `Ok(None)` when the server closed the connection.
    /// Bounded by the caller's timeout; every round reads at least one byte.
    async fn next(&mut self) -> std::io::Result<Option<Frame>> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9).collect();
                    let payload = self.buf.drain(..len).collect();
                    return Ok(Some(Frame {
                        kind: head[3],
                        flags: head[4],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]])
                            & 0x7fff_ffff,
                        payload,
                    }));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame within [`BOUND`], panicking on close or error.
    async fn expect_frame(&mut self) -> Frame {
        timeout(BOUND, self.next())
            .await
            .expect("a frame in time")
            .expect("read a frame")
            .expect("the connection must stay open")
    }
}

/// Opens TLS with ALPN h2 and writes the preface and an empty SETTINGS;
/// reads the server's SETTINGS, acknowledges it and returns its values.
async fn raw_h2(
    addr: SocketAddr,
    pki: &Pki,
) -> (
    FrameReader<tokio::io::ReadHalf<TlsStream<TcpStream>>>,
    tokio::io::WriteHalf<TlsStream<TcpStream>>,
    Vec<(u16, u32)>,
) {
    let mut tls = connect(addr, pki, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tls.write_all(&hello).await.expect("send the preface");
    let (read, mut write) = tokio::io::split(tls);
    let mut reader = FrameReader::new(read);
    let first = reader.expect_frame().await;
    assert_eq!(
        first.kind, SETTINGS,
        "the server speaks first with SETTINGS"
    );
    assert_eq!(first.flags & ACK, 0, "not an ACK");
    write
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .expect("acknowledge the server's SETTINGS");
    (reader, write, settings(&first.payload))
}

// === tests ===

#[tokio::test]
async fn an_http2_rapid_reset_burst_gets_goaway_enhance_your_calm() {
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&listener)
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let (mut reader, mut write, _) = raw_h2(addr, &pki).await;

    // CVE-2023-44487 as attackers send it: a complete GET and its
    // RST_STREAM(CANCEL), stream after stream, 100 pairs to a write, without
    // waiting for anything. Bounded by STREAMS; stops if the edge closes.
    const STREAMS: u32 = 5000;
    let started = Instant::now();
    let mut sent = 0u32;
    while sent < STREAMS {
        let mut batch = Vec::new();
        for _ in 0..100 {
            let id = 1 + 2 * sent;
            batch.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &hpack_request(GET),
            ));
            batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            sent += 1;
        }
        if write.write_all(&batch).await.is_err() {
            break;
        }
    }
    let mut seen_goaway = None;
    let closed = timeout(BOUND, async {
        // Bounded by BOUND; every round reads a frame or ends.
        loop {
            match reader.next().await {
                Ok(Some(f)) if f.kind == GOAWAY => seen_goaway = Some(parse_goaway(&f.payload)),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    let took = started.elapsed();
    drop(write);
    eprintln!(
        "rapid reset burst: {sent} pairs sent; GOAWAY {seen_goaway:?}; closed after {took:?}"
    );
    let (last, code, debug) = seen_goaway.expect("the edge must answer the flood with GOAWAY");
    assert_eq!(code, ENHANCE_YOUR_CALM, "GOAWAY reason ({debug})");
    assert!(
        last < 1000,
        "the edge must stop after a few dozen resets, not at stream {last}"
    );
    assert!(closed.is_ok(), "the edge must close after its GOAWAY");
    let node = &cluster.node("web1").stats;
    assert!(
        wait_until(BOUND, || node.in_flight() == 0).await,
        "the node must go idle"
    );
    assert!(
        node.requests() <= 20,
        "{} cancelled requests reached the node",
        node.requests()
    );

    let (status, body) = fresh_h2_get(addr, &pki, "/web/after").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    cluster.shutdown().await;
}

#[tokio::test]
async fn http2_streams_reset_by_a_client_never_pile_up_at_the_node() {
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&listener)
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let (mut sender, conn) = h2_connect(addr, &pki).await;
    let (status, _) = h2_exchange(&mut sender, h2_get("/web/before"), None, None).await;
    assert_eq!(status, 200, "the connection works before the attack");
    let before = cluster.node("web1").stats.requests();

    // Each round opens a stream with a complete GET and cancels it at once.
    // The h2 client paces this (one stream waits to be written before the
    // next), so the edge accepts each stream before its reset arrives and its
    // pending-accept limit does not trip: what must hold is that cancelled
    // requests cost no node work. Bounded by RESETS and BOUND.
    const RESETS: usize = 5000;
    let started = Instant::now();
    let mut sent = 0;
    while sent < RESETS && started.elapsed() < BOUND {
        match timeout(BOUND, poll_fn(|cx| sender.poll_ready(cx))).await {
            Ok(Ok(())) => {}
            _ => break, // the edge ended the connection (or stalled it)
        }
        let Ok((response, mut stream)) = sender.send_request(h2_get("/web/flood"), true) else {
            break;
        };
        stream.send_reset(Reason::CANCEL);
        drop(response);
        sent += 1;
    }
    drop(sender);
    let ended = timeout(BOUND, conn)
        .await
        .expect("the connection must end once the client stops")
        .expect("the connection task must not panic");
    let calm = match &ended {
        Err(e) => e.is_go_away() && e.reason() == Some(Reason::ENHANCE_YOUR_CALM),
        Ok(()) => false,
    };
    // Requests the edge already forwarded finish at the node; then it is quiet.
    let node = &cluster.node("web1").stats;
    assert!(
        wait_until(BOUND, || node.in_flight() == 0).await,
        "the node must go idle"
    );
    let forwarded = node.requests() - before;
    eprintln!(
        "rapid reset: {sent} streams opened and reset in {:?}; connection ended {ended:?}; \
         {forwarded} reached the node",
        started.elapsed()
    );
    assert!(
        calm || (sent == RESETS && ended.is_ok()),
        "the flood must end in GOAWAY(ENHANCE_YOUR_CALM) or be absorbed whole; \
         sent {sent}, connection ended {ended:?}"
    );
    assert!(
        forwarded <= 100,
        "{forwarded} of {sent} cancelled requests reached the node"
    );

    let (status, body) = fresh_h2_get(addr, &pki, "/web/after").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_continuation_flood_is_closed_in_time_and_the_edge_serves_on() {
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&listener)
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let (mut reader, mut write, server_settings) = raw_h2(addr, &pki).await;
    assert!(
        server_settings.contains(&(SETTINGS_MAX_HEADER_LIST_SIZE, 64 * 1024)),
        "the header list is held to limits.max_header_bytes: {server_settings:?}"
    );

    // A HEADERS frame without END_HEADERS, then CONTINUATION frames that never
    // end: each carries 8 junk fields of 100-byte values (138 bytes each as
    // HPACK counts a header list), so 60 frames already pass 64 KiB and
    // FRAMES (~1.8 MB) pass it thirty times over. (hyper's h2 gives up after
    // 5 CONTINUATION frames: 64 KiB / 16 KiB frames, plus 25%, at least 5.)
    const FRAMES: usize = 2000;
    let mut junk = Vec::new();
    for i in 0..8u8 {
        junk.extend(hpack_literal(
            format!("x-junk-{i}").as_bytes(),
            &[b'a' + i; 100],
        ));
    }
    let writer = tokio::spawn(async move {
        let mut written = 0;
        let head = frame(HEADERS, END_STREAM, 1, &hpack_request(POST));
        if write.write_all(&head).await.is_err() {
            return (written, write);
        }
        // Bounded by FRAMES; stops at the first failed write (the edge closed).
        while written < FRAMES {
            let mut batch = Vec::new();
            for _ in 0..50 {
                batch.extend(frame(CONTINUATION, 0, 1, &junk));
            }
            if write.write_all(&batch).await.is_err() {
                break;
            }
            written += 50;
        }
        (written, write)
    });

    let started = Instant::now();
    let mut goaway = None;
    let mut answered = false;
    let closed = timeout(BOUND, async {
        // Bounded by BOUND; every round reads a frame or ends.
        loop {
            match reader.next().await {
                Ok(Some(f)) if f.kind == GOAWAY => goaway = Some(parse_goaway(&f.payload)),
                Ok(Some(f)) if f.kind == HEADERS && f.stream == 1 => answered = true,
                Ok(Some(_)) => {}
                // EOF, or a reset because our junk was still unread: closed either way.
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    let took = started.elapsed();
    let (written, write) = timeout(BOUND, writer)
        .await
        .expect("the writer must stop in time")
        .expect("the writer must not panic");
    drop(write);
    eprintln!(
        "continuation flood: GOAWAY {goaway:?}, closed after {took:?}, {written} of {FRAMES} \
         CONTINUATION frames written"
    );
    assert!(
        closed.is_ok(),
        "the edge must close a never-ending header block within {BOUND:?} \
         (GOAWAY {goaway:?}, {written} frames written)"
    );
    assert!(
        !answered,
        "a header block over the limit must not be served"
    );
    assert!(
        goaway.as_ref().is_none_or(|(_, code, _)| *code != 0),
        "a GOAWAY for a flood carries an error code, not NO_ERROR: {goaway:?}"
    );
    assert_eq!(
        cluster.node("web1").stats.requests(),
        0,
        "nothing of the flood reaches a node"
    );

    let (status, body) = fresh_h2_get(addr, &pki, "/web/after").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    cluster.shutdown().await;
}

#[tokio::test]
async fn http2_allows_128_concurrent_streams_and_refuses_the_next_without_closing() {
    let (pki, listener) = erp_pki();
    // A threaded node given enough workers that the edge queues nothing.
    let cluster = Cluster::builder()
        .node(MockConfig::new("web1", Role::Interactive).with_mode(Mode::Threaded))
        .config(&listener)
        .tweak(|config| {
            for node in &mut config.nodes {
                node.workers = 512;
            }
        })
        .start()
        .await;
    let addr = cluster.running().addrs[1];

    // The server's SETTINGS, read by hand.
    let (mut reader, mut write, server_settings) = raw_h2(addr, &pki).await;
    assert!(
        server_settings.contains(&(SETTINGS_MAX_CONCURRENT_STREAMS, 128)),
        "{server_settings:?}"
    );

    // 129 request heads whose bodies never come: 128 streams stay open at the
    // edge (no node is asked before the body is whole), the 129th is refused
    // with RST_STREAM(REFUSED_STREAM), and the connection carries on.
    let mut heads = Vec::new();
    for i in 0..129u32 {
        heads.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i, &hpack_request(POST)));
    }
    write.write_all(&heads).await.expect("send 129 heads");
    let refused = timeout(BOUND, async {
        // Bounded by BOUND; every round reads a frame.
        loop {
            let f = reader.expect_frame().await;
            assert_ne!(
                f.kind, GOAWAY,
                "one stream too many must not end the connection"
            );
            if f.kind == RST_STREAM {
                let code = u32::from_be_bytes(f.payload[..4].try_into().expect("4 bytes"));
                return (f.stream, code);
            }
        }
    })
    .await
    .expect("the 129th stream must be refused in time");
    assert_eq!(refused, (257, REFUSED_STREAM), "stream 257 is the 129th");
    // Stream 1 ends its (empty) body and is answered on the same connection;
    // :status 200 is HPACK static index 8, sent as the byte 0x88.
    write
        .write_all(&frame(DATA, END_STREAM, 1, &[]))
        .await
        .expect("end stream 1");
    let reply = timeout(BOUND, async {
        // Bounded by BOUND; every round reads a frame.
        loop {
            let f = reader.expect_frame().await;
            assert_ne!(f.kind, GOAWAY, "the connection must stay open");
            if f.kind == HEADERS && f.stream == 1 {
                return f;
            }
        }
    })
    .await
    .expect("stream 1 must be answered in time");
    assert_eq!(reply.payload.first(), Some(&0x88), ":status 200");
    drop((reader, write));

    // The h2 client sees the same limit and stays inside it: 140 slow requests
    // at once on one connection all succeed, at most 128 at a time.
    let (mut sender, conn) = h2_connect(addr, &pki).await;
    let (status, _) = h2_exchange(&mut sender, h2_get("/web/first"), None, None).await;
    assert_eq!(status, 200);
    assert_eq!(sender.current_max_send_streams(), 128);
    let before = cluster.node("web1").stats.requests();
    let started = Instant::now();
    let requests: Vec<_> = (0..140)
        .map(|i| {
            let mut sender = sender.clone();
            tokio::spawn(async move {
                let path = format!("/web/slow?mock_sleep=400&n={i}");
                h2_exchange(&mut sender, h2_get(&path), None, None).await.0
            })
        })
        .collect();
    for request in requests {
        let status = timeout(BOUND, request)
            .await
            .expect("every slow request must finish in time")
            .expect("the request task must not panic");
        assert_eq!(status, 200);
    }
    let node = &cluster.node("web1").stats;
    eprintln!(
        "140 concurrent requests in {:?}; node max in flight {}",
        started.elapsed(),
        node.max_in_flight()
    );
    assert_eq!(node.requests() - before, 140);
    assert!(
        (64..=128).contains(&node.max_in_flight()),
        "one connection runs many streams at once, never more than 128: {}",
        node.max_in_flight()
    );
    let (status, _) = h2_exchange(&mut sender, h2_get("/web/last"), None, None).await;
    assert_eq!(status, 200, "the connection is still usable");
    drop(sender);
    conn.abort();
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_websocket_over_tls_reaches_the_gevent_node_and_echoes() {
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .gevent("bus")
        .config(&listener)
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let tls = connect(addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let mut request = format!("wss://{HOST}/websocket?version=17.0-1")
        .into_client_request()
        .expect("a valid websocket request");
    request.headers_mut().insert(
        "Origin",
        HeaderValue::from_str(&format!("https://{HOST}")).expect("a valid Origin"),
    );
    let (mut ws, response) = timeout(BOUND, tokio_tungstenite::client_async(request, tls))
        .await
        .expect("websocket handshake in time")
        .expect("websocket handshake must succeed");
    assert_eq!(response.status(), 101);
    assert_eq!(cluster.node("bus").stats.websockets_open(), 1);

    let text = r#"{"event_name": "subscribe"}"#;
    ws.send(Message::text(text))
        .await
        .expect("send a text frame");
    let echo = timeout(BOUND, async {
        // Bounded by BOUND; control frames are skipped.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(reply))) => {
                    return serde_json::from_str::<serde_json::Value>(reply.as_str())
                        .expect("the echo is JSON");
                }
                Some(Ok(_)) => {}
                other => panic!("the tunnel must stay open: {other:?}"),
            }
        }
    })
    .await
    .expect("an echo in time");
    assert_eq!(echo, serde_json::json!({"node": "bus", "echo": text}));
    assert_eq!(
        cluster.node("web1").stats.connections(),
        0,
        "a websocket never reaches an HTTP worker"
    );
    timeout(BOUND, ws.close(None))
        .await
        .expect("close in time")
        .expect("close");
    assert!(
        wait_until(BOUND, || cluster.node("bus").stats.websockets_open() == 0).await,
        "the close reaches the node"
    );
    cluster.shutdown().await;
}

/// Sends `text` on a websocket and returns the node's JSON echo, within [`BOUND`].
async fn wss_echo<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    text: &str,
) -> serde_json::Value
where
    S: AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    ws.send(Message::text(text))
        .await
        .expect("send a text frame");
    timeout(BOUND, async {
        // Bounded by BOUND; control frames are skipped.
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(reply))) => {
                    return serde_json::from_str::<serde_json::Value>(reply.as_str())
                        .expect("the echo is JSON");
                }
                Some(Ok(_)) => {}
                other => panic!("the tunnel must stay open: {other:?}"),
            }
        }
    })
    .await
    .expect("an echo in time")
}

#[tokio::test]
async fn a_websocket_over_tls_outlives_the_client_header_timeout() {
    // The tunnel reads the TLS stream itself, not through the HTTP
    // connection's timeouts: a frame is not a request head.
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .gevent("bus")
        .config(&listener)
        .config("[timeouts]\nclient_header = \"1s\"\nclient_keepalive = \"1s\"")
        .start()
        .await;
    let tls = connect(cluster.running().addrs[1], &pki, &[b"http/1.1"]).await;
    let mut request = format!("wss://{HOST}/websocket?version=17.0-1")
        .into_client_request()
        .expect("a valid websocket request");
    request.headers_mut().insert(
        "Origin",
        HeaderValue::from_str(&format!("https://{HOST}")).expect("a valid Origin"),
    );
    let (mut ws, _) = timeout(BOUND, tokio_tungstenite::client_async(request, tls))
        .await
        .expect("websocket handshake in time")
        .expect("websocket handshake must succeed");
    for round in 0..3 {
        let text = format!("round {round}");
        let echo = wss_echo(&mut ws, &text).await;
        assert_eq!(echo, serde_json::json!({"node": "bus", "echo": text}));
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    timeout(BOUND, ws.close(None))
        .await
        .expect("close in time")
        .expect("close");
    cluster.shutdown().await;
}

#[tokio::test]
async fn http2_request_trailers_are_dropped_and_the_body_arrives_whole() {
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&listener)
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let (mut sender, conn) = h2_connect(addr, &pki).await;
    let body = Bytes::from_static(br#"{"jsonrpc": "2.0", "method": "call", "params": {}}"#);
    // Content-Length is declared, as browsers do; without it see
    // `an_http2_body_without_content_length_reaches_the_node`.
    let request = Request::post(format!("https://{HOST}/web/dataset/call_kw"))
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("te", "trailers")
        .body(())
        .expect("a valid request");
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let (status, reply) =
        h2_exchange(&mut sender, request, Some(body.clone()), Some(trailers)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    let echo = Echo::parse(&reply);
    assert_eq!(echo.method(), "POST");
    assert_eq!(echo.body_len(), body.len() as u64);
    assert_eq!(echo.body_sha256(), common::sha256_hex(&body));
    let length = body.len().to_string();
    assert_eq!(
        echo.header("content-length"),
        Some(length.as_str()),
        "the buffered body goes up with its length"
    );
    for name in [
        "x-checksum",
        "grpc-status",
        "te",
        "trailer",
        "transfer-encoding",
    ] {
        assert_eq!(echo.header(name), None, "{name} must not reach the node");
    }
    let (status, _) = h2_exchange(&mut sender, h2_get("/web/after"), None, None).await;
    assert_eq!(status, 200, "the connection serves on");
    drop(sender);
    conn.abort();
    cluster.shutdown().await;
}

/// In HTTP/2 a request body ends with END_STREAM and Content-Length is
/// optional (RFC 9113 §8.1.1): such a body (a streamed `fetch` upload,
/// gRPC-style clients) must still reach the node whole, with the
/// Content-Length the edge computes. (It was once dropped: `proxy::forward`
/// looked only for HTTP/1.1 framing headers.)
#[tokio::test]
async fn an_http2_body_without_content_length_reaches_the_node() {
    let (pki, listener) = erp_pki();
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&listener)
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let (mut sender, conn) = h2_connect(addr, &pki).await;
    let body = Bytes::from_static(br#"{"jsonrpc": "2.0", "method": "call", "params": {}}"#);
    for with_trailers in [false, true] {
        let request = Request::post(format!("https://{HOST}/web/dataset/call_kw"))
            .header("content-type", "application/json")
            .body(())
            .expect("a valid request");
        let trailers = with_trailers.then(|| {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc123"));
            trailers
        });
        let (status, reply) = h2_exchange(&mut sender, request, Some(body.clone()), trailers).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        let echo = Echo::parse(&reply);
        assert_eq!(
            echo.body_len(),
            body.len() as u64,
            "trailers: {with_trailers}; the node got {}",
            echo.0
        );
        assert_eq!(echo.body_sha256(), common::sha256_hex(&body));
    }
    drop(sender);
    conn.abort();
    cluster.shutdown().await;
}
