use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use super::*;
use crate::config::{self, AuthType, CheckKind, Role, Scheduler, TrackCondition};

const SEED_HAPROXY: &str = include_str!("../../tests/fixtures/seed/haproxy.cfg");
const SEED_LB1: &str = include_str!("../../tests/fixtures/seed/keepalived-PhotonLB1.conf");
const SEED_LB2: &str = include_str!("../../tests/fixtures/seed/keepalived-PhotonLB2.conf");

fn run(haproxy: &str, nodes: &[(&str, &str)]) -> Result<Imported, Vec<Diagnostic>> {
    let names: Vec<String> = nodes.iter().map(|(n, _)| format!("{n}.conf")).collect();
    let inputs: Vec<(String, Input)> = nodes
        .iter()
        .zip(&names)
        .map(|((node, text), file)| {
            (
                node.to_string(),
                Input {
                    file,
                    bytes: text.as_bytes(),
                },
            )
        })
        .collect();
    import(
        &Input {
            file: "haproxy.cfg",
            bytes: haproxy.as_bytes(),
        },
        &inputs,
    )
}

fn seed() -> Imported {
    run(
        SEED_HAPROXY,
        &[("PhotonLB1", SEED_LB1), ("PhotonLB2", SEED_LB2)],
    )
    .unwrap_or_else(|e| panic!("the seed imports: {e:?}"))
}

fn addr(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

#[test]
fn seed_imports_into_a_config_lbd_accepts() {
    let imported = seed();
    let config = config::parse(&imported.text, "lbd.toml").expect("valid");

    assert_eq!(config.nodes.len(), 2);
    let lb1 = &config.nodes["PhotonLB1"];
    let lb2 = &config.nodes["PhotonLB2"];
    assert_eq!(lb1.interface, "eth0");
    assert_eq!((lb1.snat_ports.min, lb1.snat_ports.max), (20000, 24999));
    assert_eq!((lb2.snat_ports.min, lb2.snat_ports.max), (25000, 29999));

    assert_eq!(config.services.len(), 2);
    let expect = [
        (
            "horizon",
            "192.168.1.20",
            ["cs1", "cs2"],
            ["192.168.1.21:443", "192.168.1.22:443"],
        ),
        (
            "appvol",
            "192.168.1.30",
            ["avm1", "avm2"],
            ["192.168.1.31:443", "192.168.1.32:443"],
        ),
    ];
    for (service, (name, vip, backends, addresses)) in config.services.iter().zip(expect) {
        assert_eq!(service.name, name);
        assert_eq!(service.vip, addr(vip));
        assert_eq!(service.port, 443);
        assert_eq!(service.scheduler, Scheduler::Source);
        assert_eq!(service.persistence_timeout, None);
        assert_eq!(service.timeouts.tcp_established, Duration::from_secs(30));
        assert_eq!(service.timeouts.tcp_syn, Duration::from_secs(5));
        assert_eq!(service.backends.len(), 2);
        for (backend, (name, address)) in
            service.backends.iter().zip(backends.iter().zip(addresses))
        {
            assert_eq!(&backend.name, name);
            assert_eq!(backend.address, address.parse::<SocketAddrV4>().unwrap());
            assert_eq!(backend.weight, 1);
            let check = backend.check.as_ref().expect("checked");
            assert_eq!(check.kind, CheckKind::TlsHello);
            assert_eq!(check.inter, Duration::from_secs(30));
            assert_eq!(check.fastinter, Some(Duration::from_secs(2)));
            assert_eq!(check.downinter, Some(Duration::from_secs(5)));
            assert_eq!((check.rise, check.fall), (3, 3));
        }
    }

    assert_eq!(config.vrrp.len(), 1);
    let vrrp = &config.vrrp[0];
    assert_eq!(vrrp.name, "lb_vip");
    assert_eq!(vrrp.virtual_router_id, 11);
    assert_eq!(vrrp.priority["PhotonLB1"], 101);
    assert_eq!(vrrp.priority["PhotonLB2"], 100);
    let auth = vrrp.auth.as_ref().expect("auth");
    assert_eq!(auth.kind, AuthType::Ah);
    assert_eq!(auth.password, "Pass1234");
    assert_eq!(
        vrrp.unicast_peers,
        vec![addr("192.168.1.251"), addr("192.168.1.252")]
    );
    assert_eq!(vrrp.unicast_src["PhotonLB1"], addr("192.168.1.251"));
    assert_eq!(vrrp.unicast_src["PhotonLB2"], addr("192.168.1.252"));
    assert_eq!(
        vrrp.vips,
        vec![
            addr("192.168.1.250"),
            addr("192.168.1.20"),
            addr("192.168.1.30")
        ]
    );
    assert!(vrrp.preempt);
    assert_eq!(vrrp.track.len(), 1);
    assert_eq!(vrrp.track[0].condition, TrackCondition::XdpAttached);
    assert_eq!(vrrp.track[0].weight, 2);

    // The two users have plain-text passwords: the page is written commented
    // out, with the users to make, and the import says it is incomplete.
    assert!(config.admin.is_none());
    assert!(
        imported
            .text
            .contains("# [admin]\n# listen = \"192.168.1.250:8404\"")
    );
    assert!(
        imported
            .text
            .contains("# name = \"admin\"\n# role = \"admin\"")
    );
    assert!(
        imported
            .text
            .contains("# name = \"stats\"\n# role = \"readonly\"")
    );
    assert!(!imported.text.contains("LetMeIn") && !imported.text.contains("ReadOnly"));
    assert!(!imported.complete());
    let dropped: Vec<String> = imported
        .findings
        .iter()
        .filter(|f| f.dropped)
        .map(|f| f.to_string())
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:#?}");
    assert!(dropped[0].starts_with("haproxy.cfg:17: not imported: user admin (admin)"));
    assert!(dropped[0].contains("lbd passwd"));
    assert!(dropped[1].starts_with("haproxy.cfg:19: not imported: user stats (readonly)"));

    let listens: Vec<SocketAddrV4> = config.redirects.iter().map(|r| r.listen).collect();
    assert_eq!(
        listens,
        vec![
            "192.168.1.20:80".parse().unwrap(),
            "192.168.1.30:80".parse().unwrap()
        ]
    );
}

#[test]
fn every_block_of_the_seed_names_its_source_line() {
    let imported = seed();
    let lines: Vec<&str> = imported.text.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        let header = line.trim_start_matches("# ");
        if header.starts_with('[') {
            let comment = lines[index - 1];
            let named = comment.starts_with("# haproxy.cfg:")
                || comment.starts_with("# PhotonLB1.conf:")
                || comment.starts_with("# PhotonLB2.conf:")
                || comment.starts_with("# Password not carried over");
            assert!(named, "{line} has no source: {comment}");
        }
    }
    assert!(
        imported
            .text
            .contains("# haproxy.cfg:52: server cs1\n[[service.backend]]")
    );
    assert!(
        imported
            .text
            .contains("# PhotonLB1.conf:14: vrrp_instance LB_VIP\n[[vrrp]]")
    );
}

#[test]
fn seed_notes_what_it_translated_differently() {
    let findings: Vec<String> = seed().findings.iter().map(|f| f.to_string()).collect();
    let has = |text: &str| findings.iter().any(|f| f.contains(text));
    assert!(has("PhotonLB1.conf:9: note: vrrp_script chk_haproxy"));
    assert!(has("PhotonLB1.conf:16: note: state MASTER"));
    assert!(has("haproxy.cfg:5: note: global `chroot"));
    assert!(has("tcp_established 30s"));
}

// --- inputs of our own (documentation addresses only) ------------------------

const KEEPALIVED: &str = "\
vrrp_instance VI_1 {
  interface eth1
  virtual_router_id 42
  priority PRIO
  advert_int 1
  unicast_src_ip SRC
  unicast_peer {
    PEER
  }
  virtual_ipaddress {
    192.0.2.10
    192.0.2.11
  }
}
";

fn keepalived(prio: &str, src: &str, peer: &str) -> String {
    KEEPALIVED
        .replace("PRIO", prio)
        .replace("SRC", src)
        .replace("PEER", peer)
}

fn pair(haproxy: &str) -> Result<Imported, Vec<Diagnostic>> {
    let a = keepalived("150", "198.51.100.1", "198.51.100.2");
    let b = keepalived("100", "198.51.100.2", "198.51.100.1");
    run(haproxy, &[("a", &a), ("b", &b)])
}

fn errors(result: Result<Imported, Vec<Diagnostic>>) -> Vec<String> {
    match result {
        Ok(imported) => panic!("expected errors, got:\n{}", imported.text),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

const WEB: &str = "\
defaults
  mode tcp
  timeout connect 4s
  timeout client 1h
  timeout server 50m

frontend web
  bind 192.0.2.10:443
  default_backend pool

backend pool
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
  stick-table type ip size 100k expire 30m
  stick on src
  server w1 203.0.113.1:8443 check check-ssl verify none inter 5s
  server w2 203.0.113.2:8443 check check-ssl verify none inter 10s weight 3
";

#[test]
fn roundrobin_http_checks_and_stickiness_translate() {
    let imported = pair(WEB).expect("imports");
    let config = config::parse(&imported.text, "lbd.toml").expect("valid");
    let service = &config.services[0];
    assert_eq!(service.scheduler, Scheduler::Flow);
    assert_eq!(service.persistence_timeout, Some(Duration::from_secs(1800)));
    assert_eq!(service.timeouts.tcp_established, Duration::from_secs(3600));
    assert_eq!(service.timeouts.tcp_syn, Duration::from_secs(4));
    let w1 = service.backends[0].check.as_ref().unwrap();
    let w2 = service.backends[1].check.as_ref().unwrap();
    assert_eq!(w1.kind, CheckKind::Https);
    assert_eq!(w1.path, "/health");
    assert_eq!(w1.inter, Duration::from_secs(5));
    // Per-server check parameters become the backend's own override.
    assert_eq!(w2.inter, Duration::from_secs(10));
    assert_eq!(service.backends[1].weight, 3);
    assert_eq!(config.nodes["a"].interface, "eth1");
    assert!(imported.complete(), "{:#?}", imported.findings);
    assert!(
        imported
            .findings
            .iter()
            .any(|f| f.what == "balance roundrobin" && !f.dropped)
    );
}

#[test]
fn argon2_users_are_carried_over_with_their_roles() {
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$kdm966Z5lOzdrFVTPjkO/w$aLNlk7g8ULF0tseKMnDPbOcEEJykH2xgbG/8EhCY2Uw";
    let text = format!(
        "{WEB}
userlist ops
  user alice password {hash} groups admins
  user bob password $6$salt$abc
listen stats
  mode http
  bind 192.0.2.11:8404
  stats enable
  stats uri /stats
  acl ADMIN http_auth_group(ops) admins
  stats admin if ADMIN
"
    );
    let imported = pair(&text).expect("imports");
    let config = config::parse(&imported.text, "lbd.toml").expect("valid");
    let admin = config.admin.expect("admin page");
    assert_eq!(admin.listen, "192.0.2.11:8404".parse().unwrap());
    assert_eq!(admin.users.len(), 1);
    assert_eq!(admin.users[0].name, "alice");
    assert_eq!(admin.users[0].role, Role::Admin);
    let bob = imported
        .findings
        .iter()
        .find(|f| f.what.contains("bob"))
        .unwrap();
    assert!(bob.dropped && bob.why.contains("crypt(3)") && bob.why.contains("lbd passwd"));
}

#[test]
fn l7_backup_notify_and_unknown_keywords_are_listed_not_dropped_silently() {
    let text = format!(
        "{WEB}  server w3 203.0.113.3:8443 backup
  frobnicate yes
frontend app
  mode http
  bind 192.0.2.11:80
  default_backend pool
"
    );
    let a = keepalived("150", "198.51.100.1", "198.51.100.2").replace(
        "  advert_int 1\n",
        "  advert_int 1\n  notify_master /bin/true\n  smtp_alert\n",
    );
    let b = keepalived("100", "198.51.100.2", "198.51.100.1");
    let imported = run(&text, &[("a", &a), ("b", &b)]).expect("imports");
    let listed: Vec<String> = imported
        .findings
        .iter()
        .filter(|f| f.dropped)
        .map(|f| f.to_string())
        .collect();
    let has = |text: &str| listed.iter().any(|f| f.contains(text));
    assert!(
        has("haproxy.cfg:19: not imported: server w3 backup"),
        "{listed:#?}"
    );
    assert!(
        has("haproxy.cfg:20: not imported: `frobnicate yes`"),
        "{listed:#?}"
    );
    assert!(
        has("haproxy.cfg:21: not imported: frontend app (mode http)"),
        "{listed:#?}"
    );
    assert!(
        has("a.conf:6: not imported: `notify_master /bin/true`"),
        "{listed:#?}"
    );
    assert!(has("a.conf:7: not imported: `smtp_alert`"), "{listed:#?}");
    assert!(!imported.complete());
}

#[test]
fn a_backend_used_by_two_frontends_becomes_two_services() {
    let text = format!("{WEB}frontend web2\n  bind 192.0.2.11:443\n  default_backend pool\n");
    let imported = pair(&text).expect("imports");
    let config = config::parse(&imported.text, "lbd.toml").expect("valid");
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["pool", "web2-443"]);
    assert_eq!(config.services[1].backends.len(), 2);
}

// --- hostile inputs: a clear error with file and line, nothing written -------

#[test]
fn conflicting_vips_between_frontends_are_refused() {
    let text = format!("{WEB}frontend again\n  bind 192.0.2.10:443\n  default_backend pool\n");
    let errors = errors(pair(&text));
    assert!(
        errors[0].starts_with("haproxy.cfg:20: bind 192.0.2.10:443 in frontend again"),
        "{errors:?}"
    );
    assert!(errors[0].contains("already bound by frontend web (haproxy.cfg:8)"));
}

#[test]
fn a_server_without_address_is_refused() {
    let text = WEB.replace("server w1 203.0.113.1:8443 check", "server w1 check");
    let errors = errors(pair(&text));
    assert!(errors[0].starts_with("haproxy.cfg:17:"), "{errors:?}");
    assert!(errors[0].contains("server `w1` has no address"));
}

#[test]
fn a_server_named_by_host_name_is_refused() {
    let text = WEB.replace("203.0.113.1:8443", "web1.example.com:8443");
    let errors = errors(pair(&text));
    assert!(
        errors[0].starts_with("haproxy.cfg:17: server w1 web1.example.com"),
        "{errors:?}"
    );
}

#[test]
fn duplicate_names_are_refused() {
    let text = format!("{WEB}backend pool\n  server x 203.0.113.9:1\n");
    let errors1 = errors(pair(&text));
    assert!(
        errors1[0].starts_with("haproxy.cfg:19: backend `pool`"),
        "{errors1:?}"
    );
    assert!(errors1[0].contains("line 11"));

    let text = format!("{WEB}  server w1 203.0.113.9:8443\n");
    let errors2 = errors(pair(&text));
    assert!(
        errors2[0].starts_with("haproxy.cfg:19: server w1 in backend pool"),
        "{errors2:?}"
    );

    let a = format!(
        "{}{}",
        keepalived("150", "198.51.100.1", "198.51.100.2"),
        KEEPALIVED
    );
    let b = keepalived("100", "198.51.100.2", "198.51.100.1");
    let errors3 = errors(run(WEB, &[("a", &a), ("b", &b)]));
    assert!(
        errors3[0].starts_with("a.conf:15: vrrp_instance `VI_1`"),
        "{errors3:?}"
    );

    let errors4 = errors(run(WEB, &[("a", &b), ("a", &b)]));
    assert!(errors4[0].contains("node `a`: named twice"), "{errors4:?}");
}

#[test]
fn unterminated_and_stray_braces_are_refused() {
    let a = keepalived("150", "198.51.100.1", "198.51.100.2").replace("  }\n}\n", "  }\n");
    let b = keepalived("100", "198.51.100.2", "198.51.100.1");
    let errors1 = errors(run(WEB, &[("a", &a), ("b", &b)]));
    assert!(
        errors1[0].starts_with("a.conf:1: unterminated block"),
        "{errors1:?}"
    );

    let a = format!("{}}}\n", keepalived("150", "198.51.100.1", "198.51.100.2"));
    let errors2 = errors(run(WEB, &[("a", &a), ("b", &b)]));
    assert!(errors2[0].starts_with("a.conf:15: `}`"), "{errors2:?}");
}

#[test]
fn includes_and_conditional_blocks_are_refused() {
    let a = format!(
        "include /etc/keepalived/more.conf\n{}",
        keepalived("150", "198.51.100.1", "198.51.100.2")
    );
    let b = keepalived("100", "198.51.100.2", "198.51.100.1");
    let errors1 = errors(run(WEB, &[("a", &a), ("b", &b)]));
    assert!(
        errors1[0].starts_with("a.conf:1: `include /etc/keepalived/more.conf`"),
        "{errors1:?}"
    );

    let text = format!(".if defined(X)\n{WEB}.endif\n");
    let errors2 = errors(pair(&text));
    assert!(
        errors2[0].starts_with("haproxy.cfg:1: `.if`"),
        "{errors2:?}"
    );
}

#[test]
fn empty_files_and_binary_garbage_are_refused() {
    let errors1 = errors(pair("  \n# nothing\n"));
    assert!(
        errors1[0].starts_with("haproxy.cfg: nothing to import"),
        "{errors1:?}"
    );
    let errors2 = errors(pair(""));
    assert!(
        errors2[0].starts_with("haproxy.cfg: empty file"),
        "{errors2:?}"
    );

    let garbage: Vec<u8> = b"global\n  daemon\n\xff\xfe\x00\x01ELF".to_vec();
    let result = import(
        &Input {
            file: "haproxy.cfg",
            bytes: &garbage,
        },
        &[(
            "a".to_string(),
            Input {
                file: "a.conf",
                bytes: b"\x00\x00",
            },
        )],
    );
    let errors3 = errors(result);
    assert!(
        errors3
            .iter()
            .any(|e| e.starts_with("haproxy.cfg:3: not a text file")),
        "{errors3:?}"
    );
    assert!(
        errors3
            .iter()
            .any(|e| e.starts_with("a.conf:1: not a text file")),
        "{errors3:?}"
    );
}

#[test]
fn lines_outside_sections_and_unknown_backends_are_refused() {
    let errors1 = errors(pair(&format!("  server x 203.0.113.1:80\n{WEB}")));
    assert!(errors1[0].starts_with("haproxy.cfg:1:"), "{errors1:?}");
    assert!(errors1[0].contains("outside any section"));

    let errors2 = errors(pair(
        &WEB.replace("default_backend pool", "default_backend nope"),
    ));
    assert!(
        errors2[0].starts_with("haproxy.cfg:9: backend `nope`"),
        "{errors2:?}"
    );
}

#[test]
fn peers_that_disagree_or_miss_a_vip_are_refused() {
    let a = keepalived("150", "198.51.100.1", "198.51.100.2");
    let b =
        keepalived("100", "198.51.100.2", "198.51.100.1").replace("router_id 42", "router_id 43");
    let errors1 = errors(run(WEB, &[("a", &a), ("b", &b)]));
    assert!(
        errors1[0].starts_with("b.conf:1: vrrp_instance VI_1"),
        "{errors1:?}"
    );

    let text = WEB.replace("192.0.2.10:443", "192.0.2.99:443");
    let errors2 = errors(pair(&text));
    assert!(
        errors2[0].starts_with("haproxy.cfg:8: VIP 192.0.2.99"),
        "{errors2:?}"
    );
}

#[test]
fn missing_files_write_nothing() {
    let dir = std::env::temp_dir().join(format!("lbd-import-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("lbd.toml");
    let code = command(
        &dir.join("no-such-haproxy.cfg"),
        &[("a".to_string(), dir.join("no-such-keepalived.conf"))],
        Some(&output),
    );
    assert_eq!(code, ExitCode::from(EXIT_ERROR));
    assert!(!output.exists());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no temp file left"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_seed_is_written_atomically_and_says_incomplete() {
    let dir = std::env::temp_dir().join(format!("lbd-import-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seed");
    let output = dir.join("lbd.toml");
    let code = command(
        &fixtures.join("haproxy.cfg"),
        &[
            (
                "PhotonLB1".into(),
                fixtures.join("keepalived-PhotonLB1.conf"),
            ),
            (
                "PhotonLB2".into(),
                fixtures.join("keepalived-PhotonLB2.conf"),
            ),
        ],
        Some(&output),
    );
    assert_eq!(code, ExitCode::from(EXIT_INCOMPLETE));
    config::load(&output).expect("the written file passes lbd check");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn node_file_arguments_need_node_and_file() {
    assert_eq!(node_file("lb1=/etc/k.conf").unwrap().0, "lb1");
    assert!(node_file("/etc/k.conf").unwrap_err().contains("NODE=FILE"));
    assert!(node_file("=x").is_err());
}

#[test]
fn conditional_use_backend_and_stats_leftovers_are_listed() {
    let text = format!(
        "{WEB}frontend split
  bind 192.0.2.11:443
  acl is_admin src 192.0.2.0/24
  use_backend pool if is_admin
  default_backend pool
listen stats
  mode http
  bind 192.0.2.11:8404
  stats enable
  stats auth admin:secret
  compression algo gzip
"
    );
    let imported = pair(&text).expect("imports");
    assert!(!imported.text.contains("secret"));
    let listed: Vec<String> = imported
        .findings
        .iter()
        .filter(|f| f.dropped)
        .map(|f| f.to_string())
        .collect();
    let has = |text: &str| listed.iter().any(|f| f.contains(text));
    assert!(
        has("haproxy.cfg:22: not imported: use_backend pool"),
        "{listed:#?}"
    );
    assert!(
        has("haproxy.cfg:21: not imported: `acl is_admin"),
        "{listed:#?}"
    );
    assert!(
        has("haproxy.cfg:28: not imported: stats auth admin:..."),
        "{listed:#?}"
    );
    assert!(
        has("haproxy.cfg:29: not imported: `compression algo gzip`"),
        "{listed:#?}"
    );
}

#[test]
fn global_vrrp_version_3_drops_authentication() {
    let a = format!(
        "global_defs {{\n  vrrp_version 3\n}}\n{}",
        keepalived("150", "198.51.100.1", "198.51.100.2").replace(
            "  advert_int 1\n",
            "  advert_int 1\n  authentication {\n    auth_type PASS\n    auth_pass x\n  }\n"
        )
    );
    let b = keepalived("100", "198.51.100.2", "198.51.100.1");
    let imported = run(WEB, &[("a", &a), ("b", &b)]);
    // The peers disagree on authentication as written: refused.
    assert!(errors(imported)[0].contains("differ from a.conf"));
    let b = format!(
        "global_defs {{\n  vrrp_version 3\n}}\n{}",
        keepalived("100", "198.51.100.2", "198.51.100.1").replace(
            "  advert_int 1\n",
            "  advert_int 1\n  authentication {\n    auth_type PASS\n    auth_pass x\n  }\n"
        )
    );
    let imported = run(WEB, &[("a", &a), ("b", &b)]).expect("imports");
    let config = config::parse(&imported.text, "lbd.toml").expect("valid");
    assert_eq!(config.vrrp[0].version, config::VrrpVersion::V3);
    assert!(config.vrrp[0].auth.is_none());
}

/// keepalived.conf `KEEPALIVED` with a tracked script `command` that needs
/// two results either way, as most HAProxy pairs have it.
fn keepalived_tracking(prio: &str, src: &str, peer: &str, command: &str) -> String {
    let script = format!(
        "vrrp_script chk {{\n  script \"{command}\"\n  interval 1\n  fall 2\n  rise 2\n  \
         weight -20\n}}\n"
    );
    script
        + &keepalived(prio, src, peer).replace(
            "  advert_int 1\n",
            "  advert_int 1\n  track_script {\n    chk\n  }\n",
        )
}

#[test]
fn fall_and_rise_of_a_replaced_haproxy_script_leave_the_import_complete() {
    let command = "/usr/bin/pgrep -F /run/haproxy.pid haproxy";
    let a = keepalived_tracking("150", "198.51.100.1", "198.51.100.2", command);
    let b = keepalived_tracking("100", "198.51.100.2", "198.51.100.1", command);
    let imported = run(WEB, &[("a", &a), ("b", &b)]).expect("imports");
    let listed: Vec<String> = imported.findings.iter().map(|f| f.to_string()).collect();
    assert!(imported.complete(), "{listed:#?}");
    assert!(
        listed
            .iter()
            .any(|f| f.starts_with("a.conf:4: note: fall 2: applied to the HAProxy script")),
        "{listed:#?}"
    );
    let config = config::parse(&imported.text, "lbd.toml").expect("valid");
    let tracks: Vec<_> = config.vrrp[0]
        .track
        .iter()
        .map(|t| (&t.condition, t.weight))
        .collect();
    assert_eq!(tracks, [(&TrackCondition::XdpAttached, -20)]);
}

#[test]
fn fall_and_rise_of_a_script_lb_runs_are_still_listed_as_not_imported() {
    let command = "/usr/local/bin/check-uplink";
    let a = keepalived_tracking("150", "198.51.100.1", "198.51.100.2", command);
    let b = keepalived_tracking("100", "198.51.100.2", "198.51.100.1", command);
    let imported = run(WEB, &[("a", &a), ("b", &b)]).expect("imports");
    let listed: Vec<String> = imported.findings.iter().map(|f| f.to_string()).collect();
    assert!(!imported.complete());
    for line in [
        "a.conf:4: not imported: fall 2",
        "a.conf:5: not imported: rise 2",
    ] {
        assert!(listed.iter().any(|f| f.starts_with(line)), "{listed:#?}");
    }
}
