//! X-Accel-Redirect: a node with `x_sendfile` answers `/web/content/<sha>`
//! with an empty body and `X-Accel-Redirect: /web/filestore/<db>/<xx>/<sha>`;
//! the edge streams the file itself, applies the client's Range and
//! conditions, keeps Odoo's headers and drops the internal ones.

mod common;

use std::path::Path;

use common::{Cluster, fetch};
use odoo_edge::mock_odoo::{MockConfig, Role};

const SHA: &str = "3f786850e387550fdab836ed7e6dc881de23001b";
const LEGACY: &str = "9a0364b9e99bb480dd25e1f0284c8555b2f9f2c1";
const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-FILESTORE";

/// A filestore with one attachment in each layout, and a secret beside it.
fn filestore() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    let put = |rel: &str, bytes: &[u8]| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    };
    put(&format!("filestore/odoo/3f/{SHA}"), &data);
    put(
        &format!("filestore/odoo/9a0/{LEGACY}"),
        b"legacy layout attachment",
    );
    put("secret.txt", SECRET.as_bytes());
    (dir, data)
}

async fn start(root: &Path, configured: bool) -> Cluster {
    let store = root.join("filestore");
    let extra = if configured {
        format!("[x_accel]\nfilestore = \"{}\"\n", store.display())
    } else {
        String::new()
    };
    Cluster::builder()
        .node(MockConfig::new("web1", Role::Interactive).with_x_sendfile(&store))
        .config(&extra)
        .start()
        .await
}

#[tokio::test]
async fn the_edge_streams_the_attachment_with_odoos_headers_and_no_internal_ones() {
    let (dir, data) = filestore();
    let cluster = start(dir.path(), true).await;
    let r = fetch(
        cluster.edge,
        "GET",
        &format!("/web/content/{SHA}?mimetype=application/pdf&download=1"),
        "",
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body == data, "bytes differ from the filestore");
    assert_eq!(r.header("content-length"), Some(&*data.len().to_string()));
    assert_eq!(r.header("content-type"), Some("application/pdf"));
    assert!(
        r.header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment"))
    );
    assert_eq!(r.header("etag"), Some(&*format!("\"{SHA}\"")));
    assert!(r.header("last-modified").is_some());
    assert!(r.header("cache-control").is_some());
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'")
    );
    assert_eq!(r.header("x-sendfile"), None, "a server path must not leak");
    assert_eq!(r.header("x-accel-redirect"), None);

    let legacy = fetch(cluster.edge, "GET", &format!("/web/content/{LEGACY}"), "").await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.body, b"legacy layout attachment");
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_clients_range_and_conditions_are_applied_by_the_edge() {
    let (dir, data) = filestore();
    let cluster = start(dir.path(), true).await;
    let path = format!("/web/content/{SHA}");

    let r = fetch(cluster.edge, "GET", &path, "Range: bytes=1000-1999\r\n").await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(&*format!("bytes 1000-1999/{}", data.len()))
    );
    assert_eq!(r.body, &data[1000..2000]);

    let r = fetch(cluster.edge, "GET", &path, "Range: bytes=99999999-\r\n").await;
    assert_eq!(r.status, 416);

    // Odoo itself answers a matching If-None-Match with a bare 304: relayed as is.
    let r = fetch(
        cluster.edge,
        "GET",
        &path,
        &format!("If-None-Match: \"{SHA}\"\r\n"),
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());

    let r = fetch(
        cluster.edge,
        "GET",
        &path,
        "If-None-Match: \"something-else\"\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());

    let r = fetch(cluster.edge, "HEAD", &path, "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*data.len().to_string()));
    assert!(r.body.is_empty());
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_targets_are_a_502_and_never_serve_a_byte_outside() {
    let (dir, _) = filestore();
    let cluster = start(dir.path(), true).await;
    let targets = [
        "/web/filestore/../secret.txt".to_owned(),
        "/web/filestore/odoo/../../secret.txt".to_owned(),
        "/web/filestore/odoo/3f/../../../secret.txt".to_owned(),
        format!("/web/filestore/odoo/ab/{SHA}"),
        format!("/web/filestore/odoo/3f/{SHA}/"),
        "/etc/passwd".to_owned(),
        format!("/web/content/{SHA}"),
        format!("/web/filestore/odoo%2f..%2f..%2fsecret.txt/3f/{SHA}"),
        "/web/filestore/odoo/3f/not-a-sha".to_owned(),
    ];
    for target in &targets {
        let encoded: String = target.bytes().map(|b| format!("%{b:02X}")).collect();
        let r = fetch(
            cluster.edge,
            "GET",
            &format!("/web/content/{SHA}?mock_accel={encoded}"),
            "",
        )
        .await;
        assert_eq!(r.status, 502, "{target}");
        assert!(
            !String::from_utf8_lossy(&r.body).contains(SECRET),
            "{target}"
        );
    }
    // Well shaped, but no such file: 404.
    let missing = "0".repeat(40);
    let r = fetch(
        cluster.edge,
        "GET",
        &format!("/web/content/{SHA}?mock_accel=/web/filestore/odoo/00/{missing}"),
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    cluster.shutdown().await;
}

#[tokio::test]
async fn without_a_configured_filestore_an_accel_reply_is_a_502() {
    let (dir, _) = filestore();
    let cluster = start(dir.path(), false).await;
    let r = fetch(cluster.edge, "GET", &format!("/web/content/{SHA}"), "").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-sendfile"), None);
    cluster.shutdown().await;
}

/// Reads one reply framed by Content-Length from `stream`, pausing between
/// reads when `slow` so the edge meets a full socket buffer mid-file.
async fn read_framed(stream: &mut tokio::net::TcpStream, slow: bool) -> (String, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.expect("reply head");
        head.push(byte[0]);
        assert!(head.len() < 16 * 1024, "head too long");
    }
    let head = String::from_utf8(head).expect("ascii head");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("content-length")
        .trim()
        .parse()
        .expect("numeric length");
    let mut body = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let end = (filled + 32 * 1024).min(len);
        let n = stream
            .read(&mut body[filled..end])
            .await
            .expect("reply body");
        assert!(n > 0, "reply cut at {filled} of {len}");
        filled += n;
        if slow {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    (head, body)
}

#[tokio::test]
async fn large_attachments_and_ranges_keep_their_bytes_and_order_on_one_connection() {
    use tokio::io::AsyncWriteExt as _;
    let (dir, small) = filestore();
    const BIG: &str = "c0ffee0000000000000000000000000000000001";
    let big: Vec<u8> = (0..5 * 1024 * 1024 + 123u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    let path = dir.path().join(format!("filestore/odoo/c0/{BIG}"));
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, &big).expect("write");
    let cluster = start(dir.path(), true).await;

    let mut stream = tokio::net::TcpStream::connect(cluster.edge)
        .await
        .expect("connect");
    let get = |path: &str, extra: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: erp.example.com\r\n{extra}\r\n")
    };
    // Pipelined: the replies must come back whole and in order.
    let requests = [
        get(&format!("/web/content/{BIG}"), ""),
        get(
            &format!("/web/content/{BIG}"),
            "Range: bytes=1048570-3145740\r\n",
        ),
        get(&format!("/web/content/{SHA}"), ""),
    ]
    .concat();
    stream.write_all(requests.as_bytes()).await.expect("send");

    let (head, body) = tokio::time::timeout(common::STEP, read_framed(&mut stream, true))
        .await
        .expect("first reply in time");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == big, "big attachment differs from disk");

    let (head, body) = tokio::time::timeout(common::STEP, read_framed(&mut stream, false))
        .await
        .expect("second reply in time");
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(body == big[1048570..=3145740], "range differs from disk");

    let (head, body) = tokio::time::timeout(common::STEP, read_framed(&mut stream, false))
        .await
        .expect("third reply in time");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body == small, "small attachment differs from disk");
    cluster.shutdown().await;
}
