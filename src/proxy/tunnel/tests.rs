//! The tunnel between in-memory streams on paused time: forwarding, and the
//! close at the graceful stop, frame by frame.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::{CLOSE_LIMIT, Tunnel};

/// Upper bound of any wait; on paused time it passes at once when nothing can move.
const BOUND: Duration = Duration::from_secs(60);

const IDLE: Duration = Duration::from_secs(300);

/// A tunnel between a fake browser and a fake node.
struct Harness {
    /// The browser's end.
    client: DuplexStream,
    /// The node's end.
    node: DuplexStream,
    graceful: CancellationToken,
    hard: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Harness {
    /// `capacity` bytes fit in each pipe before a writer waits.
    fn start(capacity: usize, idle: Duration) -> Harness {
        let (client, edge_client) = duplex(capacity);
        let (node, edge_node) = duplex(capacity);
        let graceful = CancellationToken::new();
        let hard = CancellationToken::new();
        let tunnel = Tunnel::new(edge_client, Bytes::new(), edge_node, Bytes::new());
        let (g, h) = (graceful.clone(), hard.clone());
        let task = tokio::spawn(async move { tunnel.run(idle, (&g, &h)).await });
        Harness {
            client,
            node,
            graceful,
            hard,
            task,
        }
    }
}

/// Waits for the tunnel task to end; returns when it did.
async fn ended(task: JoinHandle<std::io::Result<()>>) -> Instant {
    timeout(BOUND, task)
        .await
        .expect("the tunnel must end")
        .expect("the tunnel task must not panic")
        .expect("the tunnel must end without an error");
    Instant::now()
}

/// Reads exactly `n` bytes.
async fn read_n(stream: &mut DuplexStream, n: usize) -> Vec<u8> {
    let mut out = vec![0; n];
    timeout(BOUND, stream.read_exact(&mut out))
        .await
        .unwrap_or_else(|_| panic!("{n} bytes must arrive"))
        .unwrap_or_else(|e| panic!("{n} bytes must arrive: {e}"));
    out
}

/// Reads to EOF.
async fn read_rest(stream: &mut DuplexStream) -> Vec<u8> {
    let mut out = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut out))
        .await
        .expect("EOF must come")
        .expect("read to EOF");
    out
}

/// A frame with FIN set; masked with a fixed key when `mask`.
fn frame(opcode: u8, payload: &[u8], mask: bool) -> Vec<u8> {
    assert!(payload.len() < 65_536);
    let mut out = vec![0x80 | opcode];
    let mask_bit = if mask { 0x80 } else { 0 };
    if payload.len() < 126 {
        out.push(mask_bit | payload.len() as u8);
    } else {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    let key = [1, 2, 3, 4];
    if mask {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The close the edge sends to a client, as bytes.
fn close_to_client() -> Vec<u8> {
    let mut payload = vec![0x03, 0xE9];
    payload.extend_from_slice(b"server shutting down");
    frame(0x8, &payload, false)
}

/// Reads one masked close frame from the node's end; returns its status code.
async fn read_masked_close(node: &mut DuplexStream) -> u16 {
    let head = read_n(node, 2).await;
    assert_eq!(head[0], 0x88, "a close frame with FIN");
    assert_eq!(head[1] & 0x80, 0x80, "frames to a node must be masked");
    let len = usize::from(head[1] & 0x7F);
    let key = read_n(node, 4).await;
    let payload: Vec<u8> = read_n(node, len)
        .await
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(&payload[2..], b"server shutting down");
    u16::from_be_bytes([payload[0], payload[1]])
}

#[tokio::test(start_paused = true)]
async fn bytes_pass_both_ways_and_an_eof_is_passed_on() {
    let mut h = Harness::start(64 * 1024, IDLE);
    let up = frame(0x1, b"hello node", true);
    h.client.write_all(&up).await.expect("client writes");
    assert_eq!(read_n(&mut h.node, up.len()).await, up);
    let down = frame(0x1, b"hello browser", false);
    h.node.write_all(&down).await.expect("node writes");
    assert_eq!(read_n(&mut h.client, down.len()).await, down);

    h.client.shutdown().await.expect("client half-closes");
    assert_eq!(read_rest(&mut h.node).await, b"", "the node sees the EOF");
    // The other way still works.
    h.node.write_all(&down).await.expect("node writes");
    assert_eq!(read_n(&mut h.client, down.len()).await, down);
    h.node.shutdown().await.expect("node half-closes");
    assert_eq!(read_rest(&mut h.client).await, b"");
    ended(h.task).await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_gets_every_byte_in_order() {
    // 1 KiB pipes: most of each 64 KiB frame waits in the tunnel.
    let mut h = Harness::start(1024, IDLE);
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i % 251) as u8).collect();
    let big = frame(0x2, &payload, false);
    let writer = {
        let big = big.clone();
        let mut node = h.node;
        tokio::spawn(async move {
            for _ in 0..3 {
                node.write_all(&big).await.expect("node writes");
            }
            node
        })
    };
    for _ in 0..3 {
        assert_eq!(read_n(&mut h.client, big.len()).await, big);
    }
    h.node = writer.await.expect("writer task");
}

#[tokio::test(start_paused = true)]
async fn at_the_stop_each_side_gets_a_1001_and_answers_end_the_tunnel() {
    let mut h = Harness::start(64 * 1024, IDLE);
    let start = Instant::now();
    h.graceful.cancel();
    let close = close_to_client();
    assert_eq!(read_n(&mut h.client, close.len()).await, close);
    assert_eq!(read_masked_close(&mut h.node).await, 1001);
    // Both answer with their own close frames.
    h.client
        .write_all(&frame(0x8, &1001u16.to_be_bytes(), true))
        .await
        .expect("client answers");
    h.node
        .write_all(&frame(0x8, &1001u16.to_be_bytes(), false))
        .await
        .expect("node answers");
    let ended = ended(h.task).await;
    assert!(
        ended - start < CLOSE_LIMIT,
        "the answers end the tunnel, not the limit: {:?}",
        ended - start
    );
    // The answers are not passed on: each side got exactly one close.
    assert_eq!(read_rest(&mut h.client).await, b"");
    assert_eq!(read_rest(&mut h.node).await, b"");
}

#[tokio::test(start_paused = true)]
async fn a_frame_in_flight_to_the_client_ends_before_the_close() {
    let mut h = Harness::start(64 * 1024, IDLE);
    let message = frame(0x1, b"0123456789", false);
    h.node.write_all(&message[..6]).await.expect("node writes");
    assert_eq!(read_n(&mut h.client, 6).await, &message[..6]);
    h.graceful.cancel();
    // The node's close arrives; the client has none yet: mid-frame.
    assert_eq!(read_masked_close(&mut h.node).await, 1001);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The rest of the frame and a frame after it, in one write.
    let mut rest = message[6..].to_vec();
    rest.extend(frame(0x1, b"too late", false));
    h.node.write_all(&rest).await.expect("node writes");
    let close = close_to_client();
    let mut expected = message[6..].to_vec();
    expected.extend(&close);
    assert_eq!(read_n(&mut h.client, expected.len()).await, expected);
    h.client
        .write_all(&frame(0x8, &[], true))
        .await
        .expect("client answers");
    h.node
        .write_all(&frame(0x8, &[], false))
        .await
        .expect("node answers");
    assert_eq!(
        read_rest(&mut h.client).await,
        b"",
        "nothing after the close"
    );
}

#[tokio::test(start_paused = true)]
async fn a_frame_in_flight_to_the_node_ends_before_the_masked_close() {
    let mut h = Harness::start(64 * 1024, IDLE);
    let message = frame(0x2, &[7; 300], true);
    h.client
        .write_all(&message[..3])
        .await
        .expect("client writes");
    assert_eq!(read_n(&mut h.node, 3).await, &message[..3]);
    h.graceful.cancel();
    let close = close_to_client();
    assert_eq!(read_n(&mut h.client, close.len()).await, close);
    // The header ends in the next write, the payload in later ones.
    for piece in message[3..].chunks(100) {
        h.client.write_all(piece).await.expect("client writes");
    }
    assert_eq!(read_n(&mut h.node, message.len() - 3).await, &message[3..]);
    assert_eq!(read_masked_close(&mut h.node).await, 1001);
}

#[tokio::test(start_paused = true)]
async fn the_close_waits_behind_bytes_the_client_has_not_read() {
    // 1 KiB pipes: at the stop, most of the 30 KB frame is still to come,
    // and some of it waits in the tunnel for the client to read.
    let mut h = Harness::start(1024, IDLE);
    let message = frame(0x2, &[9; 30_000], false);
    let mut node = h.node;
    let writer = {
        let message = message.clone();
        tokio::spawn(async move {
            node.write_all(&message).await.expect("node writes");
            node
        })
    };
    assert_eq!(read_n(&mut h.client, 100).await, &message[..100]);
    h.graceful.cancel();
    let mut expected = message[100..].to_vec();
    expected.extend(close_to_client());
    assert_eq!(read_n(&mut h.client, expected.len()).await, expected);
    h.node = writer.await.expect("writer task");
    assert_eq!(read_masked_close(&mut h.node).await, 1001);
}

#[tokio::test(start_paused = true)]
async fn a_frame_that_never_ends_is_cut_at_the_close_limit() {
    let mut h = Harness::start(64 * 1024, IDLE);
    let message = frame(0x1, b"never finished", false);
    h.node.write_all(&message[..4]).await.expect("node writes");
    assert_eq!(read_n(&mut h.client, 4).await, &message[..4]);
    let start = Instant::now();
    h.graceful.cancel();
    // The other direction is between frames: the node gets its close (a
    // stuck node sends nothing more, not even the rest of its frame).
    assert_eq!(read_masked_close(&mut h.node).await, 1001);
    let ended = ended(h.task).await;
    assert_eq!(ended - start, CLOSE_LIMIT, "the limit ends the tunnel");
    // No close frame inside the unfinished one: the client just sees the end.
    assert_eq!(read_rest(&mut h.client).await, b"");
}

#[tokio::test(start_paused = true)]
async fn the_hard_stop_drops_a_closing_tunnel_at_once() {
    let mut h = Harness::start(64 * 1024, IDLE);
    h.node
        .write_all(&frame(0x1, b"stuck", false)[..3])
        .await
        .expect("node writes");
    read_n(&mut h.client, 3).await;
    let start = Instant::now();
    h.graceful.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    h.hard.cancel();
    let ended = ended(h.task).await;
    assert_eq!(ended - start, Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn a_close_the_client_already_sent_is_not_repeated_to_the_node() {
    let mut h = Harness::start(64 * 1024, IDLE);
    let client_close = frame(0x8, &1000u16.to_be_bytes(), true);
    h.client
        .write_all(&client_close)
        .await
        .expect("client closes");
    assert_eq!(read_n(&mut h.node, client_close.len()).await, client_close);
    let start = Instant::now();
    h.graceful.cancel();
    // The node had not answered yet: the client gets the edge's close.
    let close = close_to_client();
    assert_eq!(read_n(&mut h.client, close.len()).await, close);
    h.node
        .write_all(&frame(0x8, &1000u16.to_be_bytes(), false))
        .await
        .expect("node answers");
    let ended = ended(h.task).await;
    assert!(ended - start < CLOSE_LIMIT, "{:?}", ended - start);
    assert_eq!(read_rest(&mut h.node).await, b"", "no second close");
    assert_eq!(read_rest(&mut h.client).await, b"");
}

#[tokio::test(start_paused = true)]
async fn a_silent_tunnel_closes_after_the_idle_timeout() {
    let h = Harness::start(1024, Duration::from_secs(50));
    let start = Instant::now();
    let ended = ended(h.task).await;
    assert_eq!(ended - start, Duration::from_secs(50));
}

#[tokio::test]
async fn an_idle_tunnel_task_stays_small() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let a = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (b, _) = listener.accept().await.expect("accept");
    let tunnel = Tunnel::new(a, Bytes::new(), b, Bytes::new());
    let (g, h) = (CancellationToken::new(), CancellationToken::new());
    let run = tunnel.run(IDLE, (&g, &h));
    let size = std::mem::size_of_val(&run);
    assert!(size <= 1024, "an idle tunnel's task is {size} bytes");
}
