//! The TLS edge: certificates chosen by SNI, HTTP/2 through ALPN to an
//! HTTP/1.1 node, HSTS, the plain listener's redirect, certificate reload,
//! and bad input on the TLS port. Certificates are made at test time.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::tls::{Pki, path_str, tls_listener};
use common::{Cluster, STEP};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

async fn connect(
    addr: SocketAddr,
    connector: &TlsConnector,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_owned()).expect("a DNS name");
    timeout(STEP, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("handshake timed out"))?
}

/// An HTTP/2 client over `stream` (ALPN h2 already agreed); the connection
/// is driven in a task of its own.
async fn h2_client(
    stream: TlsStream<TcpStream>,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

fn served_certificate(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request on an open stream (kept alive); status, headers, body.
async fn http1(
    stream: &mut TlsStream<TcpStream>,
    path: &str,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 over TLS");
    let request = Request::get(path)
        .header("host", "erp.example.com")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let exchange = async {
        let response = sender.send_request(request).await.expect("reply");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, body)
    };
    // The connection is driven alongside and given back (not closed) after.
    let mut conn = std::pin::pin!(conn.without_shutdown());
    tokio::select! {
        reply = timeout(STEP, exchange) => reply.expect("reply in time"),
        done = &mut conn => panic!("connection ended before the reply: {done:?}"),
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_https_reaches_odoo_with_hsts() {
    let pki = Pki::new();
    let erp = pki.issue("erp", &["erp.example.com"]);
    let shop = pki.issue("shop", &["shop.example.com", "*.shop.example.com"]);
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&tls_listener(&pki, &["erp", "shop"], ""))
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let client = pki.client(&[b"http/1.1"]);

    let mut stream = connect(addr, &client, "erp.example.com")
        .await
        .expect("TLS");
    assert!(served_certificate(&stream) == erp, "erp certificate");
    let (status, headers, body) = http1(&mut stream, "/web/webclient/version_info").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        headers
            .get("strict-transport-security")
            .map(|v| v.as_bytes()),
        Some(&b"max-age=31536000; includeSubDomains"[..])
    );
    let echo = common::Echo::parse(&body);
    assert_eq!(echo.header("x-forwarded-proto"), Some("https"));

    let stream = connect(addr, &client, "eu.shop.example.com")
        .await
        .expect("TLS");
    assert!(served_certificate(&stream) == shop, "wildcard certificate");
    // No certificate names it: the default (first) one answers.
    let stream = connect(addr, &client, "other.example.org").await;
    assert!(
        stream.is_err(),
        "the client must reject a certificate for another name"
    );

    // The plain listener sends no HSTS.
    let plain = common::get(cluster.edge, "/web/webclient/version_info").await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("strict-transport-security"), None);
    assert_eq!(plain.echo().header("x-forwarded-proto"), Some("http"));
    cluster.shutdown().await;
}

#[tokio::test]
async fn http2_through_alpn_reaches_an_http1_node_with_host_from_authority() {
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com"]);
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&tls_listener(&pki, &["erp"], ""))
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let stream = connect(addr, &pki.client(&[b"h2", b"http/1.1"]), "erp.example.com")
        .await
        .expect("TLS");
    let mut sender = h2_client(stream).await;
    for (method, body) in [("GET", ""), ("POST", "{\"jsonrpc\": \"2.0\"}")] {
        let request = Request::builder()
            .method(method)
            .uri("https://erp.example.com/web/dataset/call_kw?x=1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let response = timeout(STEP, sender.send_request(request))
            .await
            .expect("reply in time")
            .expect("reply");
        assert_eq!(response.status(), 200, "{method}");
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert!(response.headers().contains_key("strict-transport-security"));
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let echo = common::Echo::parse(&body);
        assert_eq!(echo.method(), method);
        assert_eq!(
            echo.header("host"),
            Some("erp.example.com"),
            "Host from :authority"
        );
        assert_eq!(echo.header("x-forwarded-host"), Some("erp.example.com"));
        assert_eq!(echo.header("x-forwarded-proto"), Some("https"));
    }
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_plain_listener_redirects_to_https_except_the_acme_directory() {
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(
            "\n[[listeners]]\naddress = \"127.0.0.1:0\"\nredirect_to_https = true\n\
             redirect_except = [\"/.well-known/acme-challenge/\"]\n\
             \n[[listeners]]\naddress = \"127.0.0.1:0\"\nredirect_to_https = true\n\
             redirect_status = 308\nhttps_port = 8443\n",
        )
        .start()
        .await;
    let addrs = &cluster.running().addrs;
    let get = |addr, path: &str| {
        common::Call::new(addr, hyper::Method::GET, path)
            .header("host", "erp.example.com:8080")
            .send()
    };
    let reply = get(addrs[1], "/web/login?db=prod&redirect=%2Fodoo").await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://erp.example.com/web/login?db=prod&redirect=%2Fodoo")
    );
    assert_eq!(
        cluster.node("web1").stats.requests(),
        0,
        "a redirect reaches no node"
    );

    let reply = get(addrs[1], "/.well-known/acme-challenge/token-1").await;
    assert!(
        reply.header("x-mock-node").is_some(),
        "the ACME path is served, not redirected"
    );

    let reply = get(addrs[2], "/web").await;
    assert_eq!(reply.status, 308);
    assert_eq!(
        reply.header("location"),
        Some("https://erp.example.com:8443/web")
    );
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_reload_swaps_the_certificate_and_an_open_connection_keeps_working() {
    let pki = Pki::new();
    let first = pki.issue("erp", &["erp.example.com"]);
    let mut cluster = Cluster::builder()
        .interactive("web1")
        .config(&tls_listener(&pki, &["erp"], ""))
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let client = pki.client(&[b"http/1.1"]);
    let mut open = connect(addr, &client, "erp.example.com")
        .await
        .expect("TLS");
    assert!(served_certificate(&open) == first);
    assert_eq!(http1(&mut open, "/web/one").await.0, 200);

    // The files are replaced (a renewal) and the config reloaded.
    let second = pki.issue("erp", &["erp.example.com"]);
    assert!(first != second);
    let text = cluster.config_text();
    let config = odoo_edge::config::parse(&text).expect("the renewed files load");
    let lines = cluster.running().reload(&config);
    assert!(
        lines.iter().any(|l| l.contains("certificates reloaded")),
        "{lines:?}"
    );
    let fresh = connect(addr, &client, "erp.example.com")
        .await
        .expect("TLS");
    assert!(
        served_certificate(&fresh) == second,
        "new handshakes get the new certificate"
    );
    assert_eq!(
        http1(&mut open, "/web/two").await.0,
        200,
        "the open connection is untouched"
    );

    // A broken file is refused whole: the running certificate stays.
    std::fs::write(pki.path("erp", "key"), "not a key").expect("break the key");
    assert!(odoo_edge::config::parse(&text).is_err());
    let again = connect(addr, &client, "erp.example.com")
        .await
        .expect("TLS");
    assert!(served_certificate(&again) == second);
    cluster.stop_edge(Duration::from_secs(2)).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn bad_input_on_the_tls_port_is_closed_and_the_edge_serves_on() {
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com"]);
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&tls_listener(
            &pki,
            &["erp"],
            "handshake_timeout = \"300ms\"\nunknown_sni = \"refuse\"\n",
        ))
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    // Listeners and probe tasks.
    let baseline = cluster.running().tasks();

    let inputs: [&[u8]; 3] = [
        b"GET / HTTP/1.1\r\nHost: erp.example.com\r\n\r\n",
        b"\x16\x03\x01\x00\x05garbage-hello-that-is-not-tls",
        &[0xff; 64],
    ];
    for input in inputs {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(input).await.expect("send");
        let mut buf = Vec::new();
        let read = timeout(STEP, tcp.read_to_end(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            read.is_err() || !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
            "{input:?} must not be served"
        );
    }

    // A client that connects and says nothing is dropped at handshake_timeout.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let read = timeout(STEP, silent.read(&mut buf))
        .await
        .expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // unknown_sni = "refuse": no certificate for another name.
    let client = pki.client(&[b"http/1.1"]);
    assert!(connect(addr, &client, "other.example.org").await.is_err());

    let mut stream = connect(addr, &client, "erp.example.com")
        .await
        .expect("TLS");
    assert_eq!(
        http1(&mut stream, "/web").await.0,
        200,
        "the edge serves on"
    );
    drop(stream);
    // Every connection task, bad ones included, has ended: nothing leaks.
    let running = cluster.running();
    assert!(
        common::wait_until(STEP, || running.tasks() == baseline).await,
        "{} tasks left, {baseline} expected",
        running.tasks()
    );
    cluster.shutdown().await;
}

#[test]
fn check_lists_each_certificate_with_its_names_and_expiry() {
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com", "www.example.com"]);
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nredirect_to_https = true\n\
         {}\n[[nodes]]\nname = \"web1\"\naddress = \"127.0.0.1:8069\"\nrole = \"interactive\"\nworkers = 2\n",
        tls_listener(&pki, &["erp"], "")
    );
    let file = pki.dir.path().join("edge.toml");
    std::fs::write(&file, text).expect("write config");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_odoo-edge"))
        .args(["check", "-c", path_str(&file)])
        .output()
        .expect("run odoo-edge check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("redirects to HTTPS (301)"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("listeners[1]"))
        .unwrap_or_else(|| panic!("no certificate line in {stdout}"));
    assert!(line.contains("erp.example.com, www.example.com"), "{line}");
    assert!(line.contains("valid until"), "{line}");
}

#[tokio::test]
async fn a_graceful_stop_lets_an_http2_request_in_flight_finish() {
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com"]);
    let mut cluster = Cluster::builder()
        .interactive("web1")
        .config(&tls_listener(&pki, &["erp"], ""))
        .start()
        .await;
    let addr = cluster.running().addrs[1];
    let stream = connect(addr, &pki.client(&[b"h2"]), "erp.example.com")
        .await
        .expect("TLS");
    let mut sender = h2_client(stream).await;
    let request = Request::get("https://erp.example.com/web/report?mock_sleep=600")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let slow = tokio::spawn(sender.send_request(request));
    let web1 = cluster.node("web1").stats.clone();
    assert!(common::wait_until(STEP, || web1.in_flight() == 1).await);
    let started = Instant::now();
    cluster.stop_edge(Duration::from_secs(5)).await;
    let response = timeout(STEP, slow)
        .await
        .expect("reply in time")
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(response.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the stop waited for the request, not for the deadline: {:?}",
        started.elapsed()
    );
    cluster.shutdown().await;
}

/// A file too large for the static cache is sent from disk; over TLS it must
/// be read and encrypted, never sent with sendfile's placeholders.
#[tokio::test]
async fn a_large_static_file_over_https_and_http2_is_byte_exact() {
    let pki = Pki::new();
    pki.issue("erp", &["erp.example.com"]);
    let addons = tempfile::tempdir().expect("addons dir");
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i * 31 % 253) as u8)
        .collect();
    let dir = addons.path().join("web/static/lib");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("big.bin"), &data).expect("write");
    let statics = format!("[static]\naddons_paths = [{:?}]\n", path_str(addons.path()));
    let cluster = Cluster::builder()
        .interactive("web1")
        .config(&format!("{statics}{}", tls_listener(&pki, &["erp"], "")))
        .start()
        .await;
    let addr = cluster.running().addrs[1];

    let mut stream = connect(addr, &pki.client(&[b"http/1.1"]), "erp.example.com")
        .await
        .expect("TLS");
    let (status, _, body) = http1(&mut stream, "/web/static/lib/big.bin").await;
    assert_eq!(status, 200);
    assert!(
        body == data,
        "HTTP/1.1 over TLS: bytes differ from the file"
    );

    let stream = connect(addr, &pki.client(&[b"h2"]), "erp.example.com")
        .await
        .expect("TLS");
    let mut sender = h2_client(stream).await;
    let request = Request::get("https://erp.example.com/web/static/lib/big.bin")
        .header("range", "bytes=1048570-2097200")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = timeout(STEP, sender.send_request(request))
        .await
        .expect("reply in time")
        .expect("reply");
    assert_eq!(response.status(), 206);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert!(
        body == data[1_048_570..=2_097_200],
        "HTTP/2: range differs from the file"
    );
    assert_eq!(
        cluster.node("web1").stats.requests(),
        0,
        "served from disk, not Odoo"
    );
    cluster.shutdown().await;
}
