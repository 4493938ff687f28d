//! Unit tests for the pure parts: dates, framing, handshake checks, ranges, file headers.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use super::http::{Framing, Head, http_date, parse_http_date, percent_decode};
use super::stream::{adler32, byte_range, content_disposition, content_type, guess_type};
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

#[test]
fn http_date_parses_what_it_formats() {
    for secs in [0, 784_111_777, 951_782_400, 1_700_000_000, 4_102_444_800] {
        let t = UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(parse_http_date(&http_date(t)), Some(t), "{secs}");
    }
    assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), None);
    assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"), None);
    assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    assert_eq!(parse_http_date(""), None);
}

#[test]
fn byte_range_follows_werkzeug() {
    assert_eq!(byte_range("bytes=0-99", 1000), Some((0, 100)));
    assert_eq!(byte_range("bytes=10-", 1000), Some((10, 1000)));
    assert_eq!(byte_range("bytes=-10", 1000), Some((990, 1000)));
    assert_eq!(byte_range("bytes=-1000", 1000), Some((0, 1000)));
    assert_eq!(byte_range("bytes=900-5000", 1000), Some((900, 1000)));
    assert_eq!(byte_range(" Bytes = 1 - 2 ", 1000), Some((1, 3)));
    assert_eq!(
        byte_range("bytes=0-99999999999999999999999", 10),
        Some((0, 10))
    );
    // All of these are 416 in werkzeug.
    for bad in [
        "bytes=1000-",
        "bytes=-1001",
        "bytes=5-3",
        "bytes=0-1,5-6",
        "bytes=abc",
        "bytes=+1-2",
        "items=0-1",
        "0-1",
        "bytes=",
    ] {
        assert_eq!(byte_range(bad, 1000), None, "{bad}");
    }
}

#[test]
fn adler32_matches_zlib() {
    // zlib.adler32(b"Wikipedia") == 0x11E60398
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    assert_eq!(adler32(b""), 1);
}

#[test]
fn content_type_adds_charset_like_werkzeug() {
    assert_eq!(content_type("text/css"), "text/css; charset=utf-8");
    assert_eq!(
        content_type("image/svg+xml"),
        "image/svg+xml; charset=utf-8"
    );
    assert_eq!(
        content_type("application/javascript"),
        "application/javascript; charset=utf-8"
    );
    assert_eq!(content_type("image/png"), "image/png");
    assert_eq!(guess_type(Path::new("a/b.JS")), Some("text/javascript"));
    assert_eq!(
        guess_type(Path::new("a/b.woff")),
        Some("application/font-woff")
    );
    assert_eq!(guess_type(Path::new("a/b.map")), None);
    assert_eq!(guess_type(Path::new("a/noext")), None);
}

#[test]
fn content_disposition_quotes_like_werkzeug() {
    assert_eq!(
        content_disposition(false, "app.js"),
        "inline; filename=app.js"
    );
    assert_eq!(
        content_disposition(true, "my report.pdf"),
        "attachment; filename=\"my report.pdf\""
    );
    assert_eq!(
        content_disposition(false, "caf\u{e9}.txt"),
        "inline; filename=caf.txt; filename*=UTF-8''caf%C3%A9.txt"
    );
}

#[test]
fn percent_decode_keeps_invalid_escapes() {
    assert_eq!(percent_decode("a%2Fb%20c", false), b"a/b c");
    assert_eq!(percent_decode("a+b%zz%4", false), b"a+b%zz%4");
    assert_eq!(percent_decode("a+b", true), b"a b");
    assert_eq!(percent_decode("%2e%2E", false), b"..");
}
