use super::*;

fn fwd(trusted: &[&str]) -> Forwarding {
    Forwarding {
        trusted_proxies: trusted.iter().map(|t| t.parse().expect("cidr")).collect(),
    }
}

fn client(peer: &str, fwd: &Forwarding) -> ClientInfo {
    let local = "192.0.2.1:8080".parse().expect("socket address");
    ClientInfo::new(peer.parse().expect("socket address"), local, false, fwd)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    h
}

#[test]
fn untrusted_peer_spoofed_forwarded_headers_are_replaced() {
    let mut h = headers(&[
        ("host", "erp.example.com:8443"),
        ("x-forwarded-for", "1.2.3.4"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-real-ip", "1.2.3.4"),
    ]);
    let fwd = fwd(&[]);
    let scheme = to_upstream(&mut h, &client("203.0.113.7:5000", &fwd), &fwd);
    assert_eq!(scheme, Scheme::Http);
    assert_eq!(h["x-forwarded-for"], "203.0.113.7");
    assert_eq!(h["x-real-ip"], "203.0.113.7");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "erp.example.com:8443");
    assert_eq!(h["host"], "erp.example.com:8443");
}

#[test]
fn trusted_peer_chain_ends_with_the_real_client_and_its_proto_is_believed() {
    let mut h = headers(&[
        ("host", "internal:80"),
        ("x-forwarded-for", "198.51.100.9, 10.0.0.5"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "erp.example.com"),
    ]);
    let fwd = fwd(&["10.0.0.0/8"]);
    let scheme = to_upstream(&mut h, &client("10.0.0.2:4000", &fwd), &fwd);
    assert_eq!(scheme, Scheme::Https);
    // The client goes last: Odoo believes only the rightmost entry.
    assert_eq!(h["x-forwarded-for"], "198.51.100.9, 10.0.0.5, 198.51.100.9");
    assert_eq!(h["x-real-ip"], "198.51.100.9");
    assert_eq!(h["x-forwarded-proto"], "https");
    assert_eq!(h["x-forwarded-host"], "erp.example.com");
}

#[test]
fn hop_by_hop_headers_and_connection_named_ones_are_removed() {
    let mut h = headers(&[
        ("connection", "keep-alive, x-secret"),
        ("keep-alive", "timeout=5"),
        ("x-secret", "1"),
        ("te", "trailers"),
        ("transfer-encoding", "chunked"),
        ("upgrade", "h2c"),
        ("proxy-connection", "keep-alive"),
        ("cookie", "session_id=abc"),
    ]);
    remove_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1, "only the cookie is left: {h:?}");
    assert_eq!(h["cookie"], "session_id=abc");
}

#[test]
fn session_cookie_gets_secure_and_samesite_once() {
    let flags = CookieFlags {
        secure: true,
        same_site: Some("Lax"),
    };
    let mut h = headers(&[
        (
            "set-cookie",
            "session_id=abc; Expires=Wed, 01 Jan 2031 00:00:00 GMT; HttpOnly; Path=/",
        ),
        ("set-cookie", "frontend_lang=en_US; Path=/"),
    ]);
    to_client(&mut h, Scheme::Https, &flags);
    let all: Vec<_> = h.get_all("set-cookie").iter().collect();
    assert_eq!(all.len(), 2);
    assert_eq!(
        all[0],
        "session_id=abc; Expires=Wed, 01 Jan 2031 00:00:00 GMT; HttpOnly; Path=/; Secure; SameSite=Lax"
    );
    assert_eq!(all[1], "frontend_lang=en_US; Path=/");

    let mut again = h.clone();
    secure_session_cookie(&mut again, &flags);
    assert_eq!(again, h, "flags are not added twice");
}

#[test]
fn session_cookie_is_left_alone_over_plain_http() {
    let flags = CookieFlags {
        secure: true,
        same_site: Some("Lax"),
    };
    let mut h = headers(&[("set-cookie", "session_id=abc; HttpOnly; Path=/")]);
    to_client(&mut h, Scheme::Http, &flags);
    assert_eq!(h["set-cookie"], "session_id=abc; HttpOnly; Path=/");
}

#[test]
fn hop_by_hop_index_matches_the_list() {
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        assert_eq!(hop_by_hop_index(name), Some(i), "{name}");
    }
    assert_eq!(hop_by_hop_index(&header::HOST), None);
}

#[test]
fn a_chain_of_trusted_addresses_only_ends_with_the_peer() {
    let fwd = fwd(&["10.0.0.0/8"]);
    let mut h = headers(&[("x-forwarded-for", "10.0.0.9")]);
    to_upstream(&mut h, &client("10.0.0.2:4000", &fwd), &fwd);
    assert_eq!(h["x-forwarded-for"], "10.0.0.9, 10.0.0.2");
    assert_eq!(h["x-real-ip"], "10.0.0.2");
}

#[test]
fn connection_cannot_remove_host_and_forwarded_host_is_always_sent() {
    let fwd = fwd(&[]);
    let mut h = headers(&[
        ("host", "erp.example.com"),
        ("connection", "close, Host, Content-Length"),
        ("content-length", "3"),
    ]);
    to_upstream(&mut h, &client("203.0.113.7:5000", &fwd), &fwd);
    assert_eq!(h["host"], "erp.example.com");
    assert_eq!(h["content-length"], "3");
    assert_eq!(h["x-forwarded-host"], "erp.example.com");

    // No Host at all (HTTP/1.0): the listener's address, never nothing.
    let mut h = headers(&[]);
    to_upstream(&mut h, &client("203.0.113.7:5000", &fwd), &fwd);
    assert_eq!(h["x-forwarded-host"], "192.0.2.1:8080");
}
