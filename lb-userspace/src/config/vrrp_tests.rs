//! `[[vrrp]]`: defaults, keepalived's version/auth rule, and one test per
//! error path with its key and line.

use std::net::Ipv4Addr;
use std::time::Duration;

use super::test_support::{ok, only_error};
use super::*;

/// Two nodes, one service, one multicast instance; tests edit one snippet.
const BASE: &str = r#"
[node.lb1]
interface = "eth0"
snat_ports = "20000-24999"

[node.lb2]
interface = "eth0"
snat_ports = "25000-29999"

[[service]]
name = "horizon"
vip = "192.0.2.20"
port = 443

[[service.backend]]
name = "cs1"
address = "198.51.100.21:443"

[[vrrp]]
name = "vi1"
virtual_router_id = 11
priority = { lb1 = 101, lb2 = 100 }
vips = ["192.0.2.20"]
"#;

fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no `{from}`");
    BASE.replacen(from, to, 1)
}

fn plus(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn multicast_instance_takes_the_defaults() {
    let config = ok(BASE);
    let [vrrp] = &config.vrrp[..] else {
        panic!("one instance expected")
    };
    assert_eq!(vrrp.name, "vi1");
    assert_eq!(vrrp.interface, None);
    assert_eq!(vrrp.virtual_router_id, 11);
    assert_eq!(vrrp.priority["lb1"], 101);
    assert_eq!(vrrp.priority["lb2"], 100);
    assert_eq!(
        vrrp.version,
        VrrpVersion::V3,
        "neither auth nor version: v3"
    );
    assert_eq!(vrrp.advert_interval, Duration::from_secs(1));
    assert_eq!(vrrp.auth, None);
    assert!(vrrp.unicast_peers.is_empty() && vrrp.unicast_src.is_empty());
    assert!(vrrp.preempt);
    assert_eq!(vrrp.preempt_delay, Duration::ZERO);
    assert_eq!(
        vrrp.garp,
        Garp {
            count: 5,
            interval: Duration::ZERO,
            delay: Duration::from_secs(5)
        }
    );
    assert!(vrrp.track.is_empty());
}

#[test]
fn no_vrrp_table_means_no_instance() {
    let text = BASE.split("[[vrrp]]").next().unwrap();
    assert!(ok(text).vrrp.is_empty());
}

#[test]
fn auth_implies_v2_and_unicast_reads_per_node_sources() {
    let config = ok(&plus(
        r#"auth = { type = "ah", password = "Pass1234" }
unicast_peers = ["192.0.2.11", "192.0.2.12"]
unicast_src = { lb1 = "192.0.2.11", lb2 = "192.0.2.12" }
interface = "eth1"
preempt = false
preempt_delay = "30s"
advert_interval = "2s"
garp = { count = 3, interval = "100ms", delay = "0s" }
track = [
  { kind = "xdp-attached", weight = -60 },
  { kind = "service-up", service = "horizon", weight = -50 },
  { kind = "script", command = "/usr/bin/true", interval = "2s", weight = 5 },
]
"#,
    ));
    let vrrp = &config.vrrp[0];
    assert_eq!(vrrp.version, VrrpVersion::V2);
    assert_eq!(
        vrrp.auth,
        Some(VrrpAuth {
            kind: AuthType::Ah,
            password: "Pass1234".into()
        })
    );
    assert_eq!(vrrp.unicast_peers.len(), 2);
    assert_eq!(vrrp.unicast_src["lb2"], Ipv4Addr::new(192, 0, 2, 12));
    assert_eq!(vrrp.interface.as_deref(), Some("eth1"));
    assert!(!vrrp.preempt);
    assert_eq!(vrrp.preempt_delay, Duration::from_secs(30));
    assert_eq!(vrrp.advert_interval, Duration::from_secs(2));
    assert_eq!(vrrp.garp.count, 3);
    assert_eq!(vrrp.garp.delay, Duration::ZERO);
    let conditions: Vec<_> = vrrp
        .track
        .iter()
        .map(|t| (&t.condition, t.weight))
        .collect();
    assert_eq!(
        conditions,
        [
            (&TrackCondition::XdpAttached, -60),
            (
                &TrackCondition::ServiceUp {
                    service: "horizon".into()
                },
                -50
            ),
            (
                &TrackCondition::Script {
                    command: "/usr/bin/true".into(),
                    interval: Duration::from_secs(2)
                },
                5
            ),
        ]
    );
}

#[test]
fn explicit_version_2_without_auth_is_allowed() {
    assert_eq!(ok(&plus("version = 2\n")).vrrp[0].version, VrrpVersion::V2);
}

#[test]
fn auth_with_version_3_is_an_error() {
    let text = plus("version = 3\nauth = { type = \"pass\", password = \"secret\" }\n");
    only_error(
        &text,
        "vrrp.vi1.version",
        "version = 3",
        "VRRPv3 has no authentication",
    );
}

#[test]
fn password_longer_than_8_bytes_is_an_error() {
    let text = plus("auth = { type = \"pass\", password = \"123456789\" }\n");
    only_error(&text, "vrrp.vi1.auth.password", "123456789", "9 bytes");
}

#[test]
fn unknown_auth_type_is_an_error() {
    let text = plus("auth = { type = \"md5\", password = \"x\" }\n");
    only_error(&text, "vrrp.vi1.auth.type", "md5", "md5");
}

#[test]
fn virtual_router_id_out_of_range_is_an_error() {
    for bad in ["0", "256"] {
        let text = with(
            "virtual_router_id = 11",
            &format!("virtual_router_id = {bad}"),
        );
        only_error(
            &text,
            "vrrp.vi1.virtual_router_id",
            "virtual_router_id",
            "1..=255",
        );
    }
}

#[test]
fn priority_out_of_range_is_an_error() {
    let text = with("lb2 = 100 }", "lb2 = 0 }");
    only_error(&text, "vrrp.vi1.priority", "lb2 = 0", "node `lb2`");
}

#[test]
fn node_without_priority_is_an_error() {
    let text = with(
        "priority = { lb1 = 101, lb2 = 100 }",
        "priority = { lb1 = 101 }",
    );
    only_error(
        &text,
        "vrrp.vi1.priority",
        "lb1 = 101",
        "node `lb2` has no entry",
    );
}

#[test]
fn priority_for_an_unknown_node_is_an_error() {
    let text = with("lb2 = 100 }", "lb2 = 100, lb3 = 99 }");
    only_error(&text, "vrrp.vi1.priority", "lb3", "`lb3` is not a node");
}

#[test]
fn unicast_peers_without_sources_is_an_error() {
    let text = plus("unicast_peers = [\"192.0.2.11\", \"192.0.2.12\"]\n");
    only_error(
        &text,
        "vrrp.vi1.unicast_src",
        "[[vrrp]]",
        "every node needs",
    );
}

#[test]
fn unicast_src_without_peers_is_an_error() {
    let text = plus("unicast_src = { lb1 = \"192.0.2.11\", lb2 = \"192.0.2.12\" }\n");
    only_error(
        &text,
        "vrrp.vi1.unicast_src",
        "unicast_src",
        "without unicast_peers",
    );
}

#[test]
fn bad_unicast_peer_address_is_an_error() {
    let text = plus("unicast_peers = [\"192.0.2.11\", \"nope\"]\n");
    only_error(&text, "vrrp.vi1.unicast_peers", "nope", "element 2");
}

#[test]
fn service_vip_outside_every_instance_is_an_error() {
    let text = with("vips = [\"192.0.2.20\"]", "vips = [\"192.0.2.21\"]");
    only_error(
        &text,
        "service.horizon.vip",
        "vip = \"192.0.2.20\"",
        "no [[vrrp]]",
    );
}

#[test]
fn empty_vips_is_an_error() {
    let text = BASE.replace("vips = [\"192.0.2.20\"]", "vips = []");
    let errors = parse(&text, "lbd.toml").unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.key == "vrrp.vi1.vips" && e.message.contains("at least one")),
        "{errors}"
    );
}

#[test]
fn v2_interval_must_be_whole_seconds() {
    let text = plus("version = 2\nadvert_interval = \"1500ms\"\n");
    only_error(&text, "vrrp.vi1.advert_interval", "1500ms", "whole seconds");
}

#[test]
fn v3_interval_must_be_centiseconds() {
    let text = plus("advert_interval = \"5ms\"\n");
    only_error(&text, "vrrp.vi1.advert_interval", "5ms", "centiseconds");
}

#[test]
fn track_weight_0_is_refused() {
    let text = plus("track = [{ kind = \"xdp-attached\", weight = 0 }]\n");
    only_error(
        &text,
        "vrrp.vi1.track[1].weight",
        "track",
        "weight 0 is refused",
    );
}

#[test]
fn track_of_an_unknown_service_is_an_error() {
    let text = plus("track = [{ kind = \"service-up\", service = \"nope\", weight = -10 }]\n");
    only_error(
        &text,
        "vrrp.vi1.track[1].service",
        "track",
        "no service is named `nope`",
    );
}

#[test]
fn script_track_needs_a_command() {
    let text = plus("track = [{ kind = \"script\", weight = -10 }]\n");
    only_error(&text, "vrrp.vi1.track[1].command", "track", "required");
}

#[test]
fn garp_count_0_is_an_error() {
    let text = plus("garp = { count = 0 }\n");
    only_error(&text, "vrrp.vi1.garp.count", "garp", "1..=100");
}

#[test]
fn misspelled_key_is_reported_with_a_suggestion() {
    let text = plus("preemt = false\n");
    only_error(&text, "vrrp.vi1.preemt", "preemt", "did you mean `preempt`");
}

const SECOND: &str = r#"
[[vrrp]]
name = "vi2"
virtual_router_id = 12
priority = { lb1 = 100, lb2 = 101 }
vips = ["192.0.2.21"]
"#;

#[test]
fn two_instances_are_fine() {
    assert_eq!(ok(&plus(SECOND)).vrrp.len(), 2);
}

#[test]
fn duplicate_instance_name_is_an_error() {
    let text = plus(&SECOND.replace("vi2", "vi1"));
    let errors = parse(&text, "lbd.toml").unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("duplicate VRRP instance name")),
        "{errors}"
    );
}

#[test]
fn duplicate_router_id_on_one_interface_is_an_error() {
    let text = plus(&SECOND.replace("= 12", "= 11 # again"));
    only_error(
        &text,
        "vrrp.vi2.virtual_router_id",
        "# again",
        "already used on this interface",
    );
}

#[test]
fn same_router_id_on_another_interface_is_fine() {
    let text = plus(&SECOND.replace("= 12", "= 11\ninterface = \"eth1\""));
    assert_eq!(ok(&text).vrrp.len(), 2);
}

#[test]
fn vip_in_two_instances_is_an_error() {
    let text = plus(&SECOND.replace("192.0.2.21", "192.0.2.20"));
    let errors = parse(&text, "lbd.toml").unwrap_err();
    assert_eq!(errors.len(), 1, "{errors}");
    assert_eq!(errors.0[0].key, "vrrp.vi2.vips");
    assert!(errors.0[0].message.contains("already in `vrrp.vi1`"));
}

#[test]
fn horizon_example_has_the_seed_instance() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/horizon.toml");
    let config = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let [vrrp] = &config.vrrp[..] else {
        panic!("one instance expected")
    };
    assert_eq!(
        (vrrp.virtual_router_id, vrrp.version),
        (11, VrrpVersion::V2)
    );
    assert_eq!((vrrp.priority["lb1"], vrrp.priority["lb2"]), (101, 100));
    assert_eq!(vrrp.auth.as_ref().map(|a| a.kind), Some(AuthType::Ah));
    assert_eq!(vrrp.vips.len(), 3);
    assert_eq!(vrrp.unicast_src["lb1"], Ipv4Addr::new(192, 0, 2, 251));
    assert_eq!(vrrp.track[0].weight, 2);
}
