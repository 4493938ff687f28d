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
