use super::split_static_path;

#[test]
fn static_paths_split_into_module_and_decoded_segments() {
    let (module, rest) = split_static_path("/web/static/src/img/logo%20big.png")
        .expect("static-shaped")
        .expect("safe");
    assert_eq!(module, "web");
    assert_eq!(rest, ["src", "img", "logo big.png"]);
}

#[test]
fn other_paths_are_not_static() {
    for p in [
        "/web",
        "/web/static",
        "/web/static/",
        "/web/login",
        "/",
        "/web/statics/x.js",
        "//static/x",
    ] {
        assert!(split_static_path(p).is_none(), "{p}");
    }
}

#[test]
fn unsafe_static_paths_are_refused() {
    for p in [
        "/web/static/../../etc/passwd",
        "/web/static/%2e%2e/%2e%2e/etc/passwd",
        "/web/static/src/..%2f..%2fetc/passwd",
        "/web/static/src%2f..%2f..%2fx",
        "/web/static/..%5c..%5cwindows",
        "/web/static/src\\..\\x",
        "/web/static/a//b",
        "/web/static/a/./b",
        "/web/static/x%00.js",
        "/web/static/%c0%ae%c0%ae/x",
        "/web/static/%ff.js",
        "/we.b/static/x.js",
        "/%2e%2e/static/x.js",
        "/web/static/a/%0a",
    ] {
        assert!(
            matches!(split_static_path(p), Some(Err(_))),
            "{p} must be refused, got {:?}",
            split_static_path(p).map(|r| r.map(|(m, s)| (m, s.join("/"))))
        );
    }
}

#[test]
fn double_encoding_is_decoded_once_and_stays_a_name() {
    let (_, rest) = split_static_path("/web/static/%252e%252e/x")
        .expect("static-shaped")
        .expect("a literal name, not a traversal");
    assert_eq!(rest, ["%2e%2e", "x"]);
}
