//! Unit tests for the pure parts: dates, framing, handshake checks.

use std::time::{Duration, UNIX_EPOCH};

use super::http::{Framing, Head, http_date};
use super::websocket::handshake;

fn head(headers: &[(&str, &str)]) -> Head {
    Head {
        method: "GET".into(),
        target: "/websocket?version=1".into(),
        minor_version: 1,
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn http_date_formats_imf_fixdate() {
    let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
    assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
    assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
}

#[test]
fn framing_prefers_chunked_and_rejects_conflicts() {
    let h = head(&[("transfer-encoding", "chunked"), ("content-length", "5")]);
    assert_eq!(h.framing().expect("chunked"), Framing::Chunked);
    let h = head(&[("content-length", "5"), ("content-length", "6")]);
    assert!(h.framing().is_err());
    let h = head(&[("content-length", "0")]);
    assert_eq!(h.framing().expect("empty"), Framing::Empty);
}

#[test]
fn query_params_are_found_with_and_without_values() {
    let mut h = head(&[]);
    h.target = "/web/health?a=1&db_server_status&mock_sleep=5".into();
    assert_eq!(h.path(), "/web/health");
    assert_eq!(h.query_param("db_server_status"), Some(""));
    assert_eq!(h.query_param("mock_sleep"), Some("5"));
    assert_eq!(h.query_param("b"), None);
}

#[test]
fn handshake_accepts_the_rfc_example_key() {
    let h = head(&[
        ("host", "odoo"),
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("origin", "http://odoo"),
    ]);
    let ok = handshake(&h).expect("valid handshake");
    assert!(ok.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
}
