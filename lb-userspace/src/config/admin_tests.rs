//! `[admin]` and `[[redirect]]`: defaults, and one test per error path with
//! its key and line.

use std::time::Duration;

use super::test_support::{ok, only_error};
use super::*;

const ADMIN_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$kdm966Z5lOzdrFVTPjkO/w$aLNlk7g8ULF0tseKMnDPbOcEEJykH2xgbG/8EhCY2Uw";

fn base() -> String {
    format!(
        r#"
[node.lb1]
interface = "eth0"
snat_ports = "20000-24999"

[[service]]
name = "horizon"
vip = "192.0.2.20"
port = 443

[[service.backend]]
name = "cs1"
address = "198.51.100.21:443"

[admin]
listen = "192.0.2.250:8404"

[[admin.user]]
name = "admin"
role = "admin"
password_hash = "{ADMIN_HASH}"

[[redirect]]
listen = "192.0.2.20:80"
"#
    )
}

fn with(from: &str, to: &str) -> String {
    let base = base();
    assert!(base.contains(from), "the base has no `{from}`");
    base.replacen(from, to, 1)
}

#[test]
fn admin_and_redirect_take_their_defaults() {
    let config = ok(&base());
    let admin = config.admin.expect("[admin] is read");
    assert_eq!(admin.listen, "192.0.2.250:8404".parse().unwrap());
    assert_eq!(admin.refresh, Duration::from_secs(30));
    assert_eq!(admin.users.len(), 1);
    assert_eq!(admin.users[0].name, "admin");
    assert_eq!(admin.users[0].role, Role::Admin);
    assert_eq!(admin.users[0].password_hash, ADMIN_HASH);
    assert_eq!(config.redirects.len(), 1);
    assert_eq!(config.redirects[0].listen, "192.0.2.20:80".parse().unwrap());
}

#[test]
fn without_the_tables_there_is_no_page_and_no_redirect() {
    let text = base();
    let cut = text.find("[admin]").unwrap();
    let config = ok(&text[..cut]);
    assert_eq!(config.admin, None);
    assert!(config.redirects.is_empty());
}

#[test]
fn the_example_has_a_page_with_two_roles_and_a_redirect() {
    let config = parse(
        include_str!("../../../examples/horizon.toml"),
        "horizon.toml",
    )
    .unwrap();
    let admin = config.admin.unwrap();
    let roles: Vec<Role> = admin.users.iter().map(|u| u.role).collect();
    assert_eq!(roles, vec![Role::Admin, Role::Readonly]);
    assert_eq!(admin.listen.port(), 8404);
    assert_eq!(config.redirects[0].listen.port(), 80);
}

#[test]
fn refresh_and_readonly_role_are_read() {
    let text = with(
        "listen = \"192.0.2.250:8404\"",
        "listen = \"192.0.2.250:8404\"\nrefresh = \"5s\"",
    )
    .replace("role = \"admin\"", "role = \"readonly\"");
    let admin = ok(&text).admin.unwrap();
    assert_eq!(admin.refresh, Duration::from_secs(5));
    assert_eq!(admin.users[0].role, Role::Readonly);
}

#[test]
fn a_password_instead_of_a_hash_is_refused() {
    let text = with(ADMIN_HASH, "hunter2");
    only_error(
        &text,
        "admin.user[1].password_hash",
        "hunter2",
        "lbd passwd",
    );
}

#[test]
fn a_hash_of_another_scheme_is_refused() {
    let text = with(
        ADMIN_HASH,
        "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g",
    );
    only_error(
        &text,
        "admin.user[1].password_hash",
        "$pbkdf2",
        "only argon2",
    );
}

#[test]
fn duplicate_users_are_refused() {
    let text = format!(
        "{}\n[[admin.user]]\nname = \"admin\" # again\nrole = \"readonly\"\npassword_hash = \"{ADMIN_HASH}\"\n",
        base()
    );
    only_error(
        &text,
        "admin.user[2].name",
        "# again",
        "duplicate user `admin`",
    );
}

#[test]
fn an_unknown_role_is_refused() {
    let text = with("role = \"admin\"", "role = \"root\"");
    only_error(&text, "admin.user[1].role", "\"root\"", "root");
}

#[test]
fn admin_without_users_is_refused() {
    let text = base();
    let start = text.find("[[admin.user]]").unwrap();
    let end = text.find("[[redirect]]").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    only_error(&text, "admin.user", "[admin]", "no users");
}

#[test]
fn a_listener_on_a_service_vip_and_port_is_refused() {
    let text = with("listen = \"192.0.2.20:80\"", "listen = \"192.0.2.20:443\"");
    only_error(
        &text,
        "redirect[1].listen",
        "192.0.2.20:443\"",
        "VIP and port of service",
    );
    let text = with(
        "listen = \"192.0.2.250:8404\"",
        "listen = \"192.0.2.20:443\"",
    );
    only_error(&text, "admin.listen", "192.0.2.20:443\"", "VIP and port");
}

#[test]
fn a_port_inside_a_snat_range_is_refused() {
    let text = with(
        "listen = \"192.0.2.250:8404\"",
        "listen = \"192.0.2.250:21000\"",
    );
    only_error(&text, "admin.listen", "21000", "inside node.lb1.snat_ports");
    let text = with(
        "listen = \"192.0.2.20:80\"",
        "listen = \"192.0.2.20:24000\"",
    );
    only_error(&text, "redirect[1].listen", "24000", "SNAT range");
}

#[test]
fn two_listeners_on_one_address_are_refused() {
    let text = with(
        "listen = \"192.0.2.20:80\"",
        "listen = \"192.0.2.250:8404\" # twice",
    );
    only_error(&text, "redirect[1].listen", "# twice", "already a listener");
}

#[test]
fn unknown_keys_are_reported_with_a_suggestion() {
    let text = with(
        "listen = \"192.0.2.250:8404\"",
        "listen = \"192.0.2.250:8404\"\nrefesh = \"5s\"",
    );
    only_error(&text, "admin.refesh", "refesh", "did you mean `refresh`");
}
