//! `/websocket`: Odoo's handshake checks (`addons/bus/websocket.py`) and an echo session.

use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, frame::coding};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tracing::debug;

use super::http::{Head, Reply};
use super::{Node, stopped};

/// `WebsocketConnectionHandler._REQUIRED_HANDSHAKE_HEADERS`, in the order we name them.
const REQUIRED: [&str; 6] = [
    "connection",
    "host",
    "sec-websocket-key",
    "sec-websocket-version",
    "upgrade",
    "origin",
];

/// Odoo's `INACTIVITY_TIMEOUT`: it pings a websocket after 45 s of silence.
const INACTIVITY: Duration = Duration::from_secs(45);

/// Odoo's `MESSAGE_MAX_SIZE` (1 MiB).
const MESSAGE_MAX_SIZE: usize = 1 << 20;

/// Checks the handshake in Odoo's order; `Ok` carries the complete 101 head to write.
pub(crate) fn handshake(head: &Head) -> Result<String, Reply> {
    let missing: Vec<&str> = REQUIRED
        .into_iter()
        .filter(|name| head.header(name).is_none_or(|v| v.trim().is_empty()))
        .collect();
    if !missing.is_empty() {
        let text = format!("Empty or missing header(s): {}", missing.join(", "));
        return Err(Reply::werkzeug_error(400, &text));
    }
    if !head
        .header("upgrade")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    {
        return Err(Reply::werkzeug_error(400, "Invalid upgrade header"));
    }
    if !head.has_token("connection", "upgrade") {
        return Err(Reply::werkzeug_error(400, "Invalid connection header"));
    }
    if head.header("sec-websocket-version").map(str::trim) != Some("13") {
        let reply = Reply::werkzeug_error(
            426,
            "Wrong websocket version was given during the handshake",
        );
        return Err(reply.with_header("Sec-WebSocket-Version", "13"));
    }
    let key = head.header("sec-websocket-key").unwrap_or("").trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key);
    if !decoded.is_ok_and(|k| k.len() == 16) {
        return Err(Reply::werkzeug_error(
            400,
            "Invalid Sec-WebSocket-Key header",
        ));
    }
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    ))
}

/// Runs an upgraded connection: text is answered with `{"node", "echo"}`, binary is echoed,
/// pings are answered; a mock shutdown closes it with 1001 as Odoo's shutdown does.
pub(crate) async fn echo(node: &Node, stream: &mut TcpStream, leftover: Vec<u8>) {
    let _open = node.stats.open_websocket();
    let mut shutdown = node.shutdown.clone();
    // Small buffers: the proxy benchmark holds thousands of idle websockets open.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MESSAGE_MAX_SIZE))
        .max_frame_size(Some(MESSAGE_MAX_SIZE));
    let mut ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(config)).await;
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout(INACTIVITY, ws.next()) => next,
            () = stopped(&mut shutdown) => {
                let frame = CloseFrame { code: coding::CloseCode::Away, reason: "".into() };
                let _ = ws.close(Some(frame)).await;
                return;
            }
        };
        let reply = match next {
            Err(_idle) => Message::Ping(Bytes::new()),
            Ok(None) => return,
            Ok(Some(Err(err))) => {
                debug!(cause = %err, "websocket ended");
                return;
            }
            Ok(Some(Ok(Message::Text(text)))) => {
                let body = serde_json::json!({ "node": node.cfg.name, "echo": text.as_str() });
                Message::text(body.to_string())
            }
            Ok(Some(Ok(Message::Binary(data)))) => Message::Binary(data),
            // Pongs to pings and the close reply are queued and flushed by tungstenite itself.
            Ok(Some(Ok(_control))) => continue,
        };
        if let Err(err) = ws.send(reply).await {
            debug!(cause = %err, "websocket send failed");
            return;
        }
    }
}
