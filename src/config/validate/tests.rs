use super::check_upstream_address;

#[test]
fn upstream_addresses_accept_ips_names_and_ipv6() {
    for ok in [
        "10.0.0.11:8069",
        "[::1]:8072",
        "odoo-web-1:8069",
        "odoo.internal.example:80",
    ] {
        assert_eq!(check_upstream_address(ok), Ok(()), "{ok}");
    }
}

#[test]
fn upstream_addresses_reject_missing_or_bad_ports_and_hosts() {
    for bad in [
        "10.0.0.11",
        "odoo:0",
        "odoo:99999",
        ":8069",
        "bad host:80",
        "-x:80",
        "a..b:80",
    ] {
        assert!(
            check_upstream_address(bad).is_err(),
            "{bad} must be rejected"
        );
    }
}
