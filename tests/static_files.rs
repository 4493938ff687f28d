//! Static module assets from the addons paths: bytes equal to disk, Odoo's
//! headers, 304, 206/416, HEAD, gzip/br that decode to the original, the
//! fallback to Odoo for a missing file, and no byte from outside the roots
//! whatever the path.

mod common;

use std::io::Read;
use std::path::Path;

use common::{Cluster, fetch};

const SECRET: &str = "TOP-SECRET-OUTSIDE-THE-ROOTS";

/// A reply read to the connection's close.
/// Two addons paths, Odoo-shaped, plus a secret file outside them.
struct Addons {
    dir: tempfile::TempDir,
}

impl Addons {
    fn new() -> Addons {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let write = |rel: &str, data: &[u8]| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, data).expect("write fixture");
        };
        write("secret.txt", SECRET.as_bytes());
        write("addons1/web/static/src/app.js", &js(200 * 1024));
        write(
            "addons2/web/static/src/app.js",
            b"// the second addons path: never served",
        );
        write("addons2/sale/static/src/sale.txt", b"sale module text\n");
        write(
            "addons1/web/static/img/logo.png",
            &[0x89, b'P', b'N', b'G', 1, 2, 3, 4],
        );
        write("addons1/web/static/big.bin", &pattern(2 * 1024 * 1024 + 7));
        let css = js(8 * 1024);
        write("addons1/web/static/pre.css", &css);
        write("addons1/web/static/pre.css.gz", &gzip(&css));
        std::os::unix::fs::symlink(
            root.join("secret.txt"),
            root.join("addons1/web/static/evil.txt"),
        )
        .expect("symlink out");
        std::os::unix::fs::symlink("src/app.js", root.join("addons1/web/static/alias.js"))
            .expect("symlink in");
        let fifo = root.join("addons1/web/static/pipe.js");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo must work");
        Addons { dir }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self, extra: &str) -> String {
        format!(
            "[static]\naddons_paths = [\"{}\", \"{}\"]\n{extra}",
            self.root().join("addons1").display(),
            self.root().join("addons2").display()
        )
    }

    fn file(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.root().join(rel)).expect("fixture")
    }
}

fn js(len: usize) -> Vec<u8> {
    let line = b"odoo.define('web.app', function (require) { return 42; });\n";
    line.iter().copied().cycle().take(len).collect()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

async fn start(addons: &Addons, extra: &str) -> Cluster {
    Cluster::builder()
        .interactive("web1")
        .config(&addons.config(extra))
        .start()
        .await
}

#[tokio::test]
async fn a_static_file_is_served_from_the_first_addons_path_with_odoos_headers() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    let reply = fetch(cluster.edge, "GET", "/web/static/src/app.js", "").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, addons.file("addons1/web/static/src/app.js"));
    assert_eq!(
        reply.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        reply.header("cache-control"),
        Some("public, max-age=604800")
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("vary"), Some("Accept-Encoding"));
    assert!(reply.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(reply.header("last-modified").is_some());
    assert_eq!(
        reply.header("content-security-policy"),
        None,
        "CSP only on images"
    );

    let png = fetch(cluster.edge, "GET", "/web/static/img/logo.png", "").await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(
        png.header("content-security-policy"),
        Some("default-src 'none'")
    );
    assert_eq!(png.body, addons.file("addons1/web/static/img/logo.png"));

    // A module only in the second path.
    let sale = fetch(cluster.edge, "GET", "/sale/static/src/sale.txt", "").await;
    assert_eq!(sale.body, b"sale module text\n");
    assert_eq!(
        cluster.mock_connections(),
        0,
        "no node touched by static hits"
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn conditional_range_and_head_requests() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    let full = fetch(cluster.edge, "GET", "/web/static/src/app.js", "").await;
    let etag = full.header("etag").expect("etag").to_owned();
    let last_modified = full.header("last-modified").expect("date").to_owned();

    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        &format!("If-Modified-Since: {last_modified}\r\n"),
    )
    .await;
    assert_eq!(r.status, 304);
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "If-None-Match: \"other\"\r\n",
    )
    .await;
    assert_eq!(r.status, 200);

    let disk = addons.file("addons1/web/static/src/app.js");
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "Range: bytes=100-199\r\n",
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(&*format!("bytes 100-199/{}", disk.len()))
    );
    assert_eq!(r.body, &disk[100..200]);
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "Range: bytes=-10\r\n",
    )
    .await;
    assert_eq!(r.body, &disk[disk.len() - 10..]);
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "Range: bytes=999999999-\r\n",
    )
    .await;
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("content-range"),
        Some(&*format!("bytes */{}", disk.len()))
    );

    let r = fetch(cluster.edge, "HEAD", "/web/static/src/app.js", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(&*disk.len().to_string()));
    assert!(r.body.is_empty());
    cluster.shutdown().await;
}

#[tokio::test]
async fn compressed_forms_decode_to_the_original_bytes() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    let disk = addons.file("addons1/web/static/src/app.js");

    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "Accept-Encoding: gzip, br\r\n",
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert!(
        r.body.len() < disk.len() / 4,
        "brotli must compress this text"
    );
    let mut decoded = Vec::new();
    brotli::Decompressor::new(&r.body[..], 4096)
        .read_to_end(&mut decoded)
        .expect("valid brotli");
    assert_eq!(decoded, disk);

    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "Accept-Encoding: gzip\r\n",
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, disk);

    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/src/app.js",
        "Accept-Encoding: gzip;q=0, identity\r\n",
    )
    .await;
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, disk);

    // The shipped .gz sibling is served for gzip clients.
    let css = addons.file("addons1/web/static/pre.css");
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/pre.css",
        "Accept-Encoding: gzip\r\n",
    )
    .await;
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.body, addons.file("addons1/web/static/pre.css.gz"));
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&r.body[..])
        .read_to_end(&mut decoded)
        .expect("valid gzip");
    assert_eq!(decoded, css);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_file_larger_than_the_cache_limit_streams_from_disk() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    let disk = addons.file("addons1/web/static/big.bin");
    let r = fetch(cluster.edge, "GET", "/web/static/big.bin", "").await;
    assert_eq!(r.status, 200);
    assert!(r.body == disk, "streamed bytes differ from the file");
    let r = fetch(
        cluster.edge,
        "GET",
        "/web/static/big.bin",
        "Range: bytes=2097150-\r\n",
    )
    .await;
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &disk[2_097_150..]);
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_missing_file_goes_to_odoo_unchanged() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    let r = fetch(cluster.edge, "GET", "/web/static/src/missing.js?v=1", "").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains("\"node\":\"web1\""), "{text}");
    assert!(
        text.contains("\"path\":\"/web/static/src/missing.js\""),
        "{text}"
    );
    // Other methods on static paths go to Odoo too.
    let r = fetch(
        cluster.edge,
        "POST",
        "/web/static/src/app.js",
        "Content-Length: 0\r\n",
    )
    .await;
    assert!(String::from_utf8_lossy(&r.body).contains("\"method\":\"POST\""));
    cluster.shutdown().await;
}

#[tokio::test]
async fn symlinks_are_refused_unless_allowed_and_never_outside() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    assert_eq!(
        fetch(cluster.edge, "GET", "/web/static/alias.js", "")
            .await
            .status,
        404
    );
    let r = fetch(cluster.edge, "GET", "/web/static/evil.txt", "").await;
    assert_eq!(r.status, 404);
    assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
    cluster.shutdown().await;

    let cluster = start(&addons, "follow_symlinks = true\n").await;
    let r = fetch(cluster.edge, "GET", "/web/static/alias.js", "").await;
    assert_eq!(r.status, 200, "a symlink inside its addons path is allowed");
    assert_eq!(r.body, addons.file("addons1/web/static/src/app.js"));
    let r = fetch(cluster.edge, "GET", "/web/static/evil.txt", "").await;
    assert_eq!(r.status, 404, "a symlink out of its addons path never is");
    assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
    cluster.shutdown().await;
}

#[tokio::test]
async fn attack_paths_never_return_a_byte_from_outside_the_roots() {
    let addons = Addons::new();
    let cluster = start(&addons, "").await;
    let attacks = [
        "/web/static/../../secret.txt",
        "/web/static/../../../secret.txt",
        "/web/static/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/web/static/%2E%2E/%2E%2E/%2E%2E/secret.txt",
        "/web/static/%252e%252e/%252e%252e/%252e%252e/secret.txt",
        "/web/static/..%2f..%2f..%2fsecret.txt",
        "/web/static/..%2F..%2F..%2Fsecret.txt",
        "/web/static/src/..%2f..%2f..%2f..%2fsecret.txt",
        "/web/static/..\\..\\..\\secret.txt",
        "/web/static/..%5c..%5c..%5csecret.txt",
        "/web/static//../../secret.txt",
        "/web/static/src//app.js",
        "/web/static/./src/app.js",
        "/web/static/src/app.js%00.png",
        "/web/static/%00",
        "/web/static/%c0%ae%c0%ae/%c0%ae%c0%ae/secret.txt",
        "/web/static/%c0%af..%c0%af..%c0%afsecret.txt",
        "/web/static/%e0%80%ae%e0%80%ae/secret.txt",
        "/web/static/evil.txt",
        "/web/static/src",
        "/web/static/src/",
        "/web/static/pipe.js",
        "/..%2f..%2f/static/secret.txt",
        "/%2e%2e/static/secret.txt",
        "/web%2f..%2f../static/secret.txt",
        "/web/static/%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/web/static/..;/..;/secret.txt",
        "/web/static/src/app.js/../../../../secret.txt",
    ];
    for path in attacks {
        let r = fetch(cluster.edge, "GET", path, "").await;
        let text = String::from_utf8_lossy(&r.body);
        assert!(!text.contains(SECRET), "{path} leaked the secret file");
        assert!(!text.contains("root:x:0:0"), "{path} leaked /etc/passwd");
        assert!(
            !text.contains(&addons.root().display().to_string()),
            "{path}: the reply names a server path"
        );
        assert!(
            r.status == 404 || r.status == 400 || text.contains("\"node\":\"web1\""),
            "{path}: expected 404/400 or Odoo's own answer, got {} {text}",
            r.status
        );
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_bad_addons_path_is_a_config_error_with_its_line() {
    let text = "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n[[nodes]]\nname = \"w\"\naddress = \"127.0.0.1:1\"\nrole = \"interactive\"\nworkers = 1\n\n[static]\naddons_paths = [\"/nonexistent/addons\"]\n";
    let Err(odoo_edge::config::ConfigError::Invalid(problems)) = odoo_edge::config::parse(text)
    else {
        panic!("a missing addons path must be refused");
    };
    assert_eq!(problems.len(), 1);
    let shown = problems[0].to_string();
    assert!(
        shown.starts_with(
            "static.addons_paths[0] = \"/nonexistent/addons\" (line 11): cannot be read"
        ),
        "{shown}"
    );
}

#[tokio::test]
async fn a_file_only_odoo_has_is_fetched_from_odoo() {
    let addons = Addons::new();
    // Odoo's own addons path has a module the edge does not know.
    let odoo_addons = tempfile::tempdir().expect("temp dir");
    let only_odoo = odoo_addons.path().join("website/static/src/site.css");
    std::fs::create_dir_all(only_odoo.parent().expect("parent")).expect("mkdir");
    std::fs::write(&only_odoo, b"body { color: #714b67 }").expect("write");
    let cluster = Cluster::builder()
        .node(
            odoo_edge::mock_odoo::MockConfig::new("web1", odoo_edge::mock_odoo::Role::Interactive)
                .with_addons_paths([odoo_addons.path()]),
        )
        .config(&addons.config(""))
        .start()
        .await;
    let r = fetch(cluster.edge, "GET", "/website/static/src/site.css", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"body { color: #714b67 }");
    assert_eq!(
        cluster.node("web1").stats.static_hits(),
        1,
        "Odoo served it"
    );
    // A file the edge has never reaches Odoo.
    fetch(cluster.edge, "GET", "/web/static/src/app.js", "").await;
    assert_eq!(cluster.node("web1").stats.static_hits(), 1);
    cluster.shutdown().await;
}
