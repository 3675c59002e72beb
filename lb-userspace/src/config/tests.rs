//! One test per error path, plus defaults, the node choice and the example.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// The smallest valid config; tests edit one line of it.
const BASE: &str = r#"
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
"#;

/// BASE with one snippet replaced; the snippet must exist.
fn base_with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no `{from}`");
    BASE.replacen(from, to, 1)
}

/// BASE with text appended.
fn base_plus(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text, "lbd.toml") {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.0,
    }
}

/// The single error of `text`; fails listing all of them otherwise.
fn only_error(text: &str) -> ConfigError {
    let errors = errors(text);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got:\n{}",
        ConfigErrors(errors.clone())
    );
    errors.into_iter().next().unwrap()
}

/// 1-based line of the only occurrence of `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "`{needle}` must occur on exactly one line");
    lines[0]
}

/// Asserts key, line and a part of the message.
fn assert_error(error: &ConfigError, key: &str, line: usize, message_part: &str) {
    assert_eq!(error.key, key, "key of {error}");
    assert_eq!(error.line, line, "line of {error}");
    assert!(
        error.message.contains(message_part),
        "message of `{error}` lacks `{message_part}`"
    );
    assert_eq!(error.file, "lbd.toml");
}

fn ok(text: &str) -> Config {
    parse(text, "lbd.toml").unwrap_or_else(|errors| panic!("unexpected errors:\n{errors}"))
}

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/horizon.toml")
}

// --- Valid files and defaults ----------------------------------------------------

#[test]
fn base_is_valid() {
    let config = ok(BASE);
    assert_eq!(config.services.len(), 1);
    assert_eq!(config.nodes.len(), 1);
}

#[test]
fn horizon_example_parses_with_two_services_of_two_backends() {
    let config = load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["horizon", "appvolumes"]);
    for service in &config.services {
        assert_eq!(service.backends.len(), 2, "{}", service.name);
        assert_eq!(service.port, 443);
        assert_eq!(service.scheduler, Scheduler::Source);
        assert_eq!(service.persistence_timeout, Some(Duration::from_secs(3600)));
        assert_eq!(service.snat_address, service.vip);
    }
    let horizon = &config.services[0];
    assert_eq!(horizon.vip, Ipv4Addr::new(192, 0, 2, 20));
    let addresses: Vec<SocketAddrV4> = horizon.backends.iter().map(|b| b.address).collect();
    assert_eq!(
        addresses,
        [
            "198.51.100.21:443".parse::<SocketAddrV4>().unwrap(),
            "198.51.100.22:443".parse().unwrap()
        ]
    );
    assert_eq!(config.services[1].vip, Ipv4Addr::new(192, 0, 2, 30));
    assert_eq!(config.services[1].backends[1].name, "avm2");
    let lb1 = &config.nodes["lb1"];
    let lb2 = &config.nodes["lb2"];
    assert!(!lb1.snat_ports.overlaps(&lb2.snat_ports));
    assert_eq!(lb1.xdp_mode, XdpMode::Native);
}

#[test]
fn syn_cookies_modes_are_read() {
    for (word, mode) in [
        ("auto", SynCookies::Auto),
        ("always", SynCookies::Always),
        ("never", SynCookies::Never),
    ] {
        let text = base_with(
            "interface = \"eth0\"",
            &format!("interface = \"eth0\"\nsyn_cookies = \"{word}\""),
        );
        assert_eq!(ok(&text).nodes["lb1"].syn_cookies, mode, "{word}");
    }
    let text = base_with(
        "interface = \"eth0\"",
        "interface = \"eth0\"\nsyn_cookies = true",
    );
    let e = only_error(&text);
    assert_eq!(e.key, "node.lb1.syn_cookies");
    assert_eq!(e.line, line_of(&text, "syn_cookies = true"));
}

#[test]
fn example_has_no_private_addresses() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    assert!(!text.contains("192.168."));
    assert!(!text.contains("10.0."));
}

#[test]
fn defaults_are_applied() {
    let config = ok(BASE);
    let node = &config.nodes["lb1"];
    assert_eq!(node.interface, "eth0");
    assert_eq!(node.xdp_mode, XdpMode::Native);
    assert_eq!(node.syn_cookies, SynCookies::Never);
    assert_eq!(
        node.snat_ports,
        PortRange {
            min: 20000,
            max: 24999
        }
    );
    assert_eq!(config.limits, Limits::default());
    assert_eq!(config.limits.maglev_size, 65537);
    let service = &config.services[0];
    assert_eq!(service.protocol, Protocol::Tcp);
    assert_eq!(service.mode, Mode::Nat);
    assert_eq!(service.scheduler, Scheduler::Source);
    assert_eq!(service.snat_address, service.vip);
    assert_eq!(service.persistence_timeout, None);
    assert_eq!(
        service.timeouts,
        Timeouts {
            tcp_established: Duration::from_secs(3600),
            tcp_closing: Duration::from_secs(30),
            tcp_closed: Duration::from_secs(2),
            tcp_syn: Duration::from_secs(10),
            udp: Duration::from_secs(30),
        }
    );
    assert_eq!(service.backends[0].weight, 1);
}

#[test]
fn every_field_written_is_honoured() {
    let text = r#"
[node.a]
interface = "ens3"
xdp_mode = "generic"
snat_ports = "40000-40099"

[limits]
max_services = 4
max_backends = 16
maglev_size = 1009
flows = 1000
half_open = 100
persistence = 10

[[service]]
name = "dns"
vip = "203.0.113.5"
port = 53
protocol = "udp"
mode = "nat"
scheduler = "flow"
snat_address = "203.0.113.6"
persistence_timeout = "90s"
timeouts = { tcp_established = "2h", tcp_closing = "5s", tcp_closed = "1s", tcp_syn = "500ms", udp = "1m" }
backend = [
  { name = "ns1", address = "198.51.100.53:5353", weight = 0 },
  { name = "ns2", address = "198.51.100.54:53", weight = 256 },
]
"#;
    let config = ok(text);
    let node = &config.nodes["a"];
    assert_eq!(node.xdp_mode, XdpMode::Generic);
    assert_eq!(node.snat_ports.len(), 100);
    assert_eq!(
        config.limits,
        Limits {
            max_services: 4,
            max_backends: 16,
            maglev_size: 1009,
            flows: 1000,
            half_open: 100,
            persistence: 10,
        }
    );
    let service = &config.services[0];
    assert_eq!(service.protocol, Protocol::Udp);
    assert_eq!(service.protocol.ip_proto(), 17);
    assert_eq!(service.scheduler, Scheduler::Flow);
    assert_eq!(service.snat_address, Ipv4Addr::new(203, 0, 113, 6));
    assert_eq!(service.persistence_timeout, Some(Duration::from_secs(90)));
    assert_eq!(service.timeouts.tcp_established, Duration::from_secs(7200));
    assert_eq!(service.timeouts.tcp_syn, Duration::from_millis(500));
    assert_eq!(service.timeouts.udp, Duration::from_secs(60));
    assert_eq!(service.backends[0].weight, 0);
    assert_eq!(service.backends[1].weight, 256);
    assert_eq!(service.backends[0].address.port(), 5353);
}

#[test]
fn timeouts_default_one_by_one() {
    let text = base_with(
        "port = 443\n",
        "port = 443\n[service.timeouts]\nudp = \"5m\"\n",
    );
    let timeouts = ok(&text).services[0].timeouts;
    assert_eq!(timeouts.udp, Duration::from_secs(300));
    assert_eq!(
        timeouts.tcp_established,
        Timeouts::default().tcp_established
    );
}

// --- Syntax -------------------------------------------------------------------------

#[test]
fn syntax_error_has_its_position_and_no_key() {
    let text = base_with("port = 443", "port = = 443");
    let error = only_error(&text);
    assert_eq!(error.key, "");
    assert_eq!(error.line, line_of(&text, "port = = 443"));
    assert_eq!(error.column, 8);
    assert_eq!(
        error.to_string(),
        format!("lbd.toml:{}:8: {}", error.line, error.message)
    );
}

#[test]
fn several_syntax_errors_are_reported() {
    let text = base_with("port = 443", "port = 44 3").replace("name = \"cs1\"", "name = cs1");
    let errors = errors(&text);
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(
        lines,
        [line_of(&text, "port = 44 3"), line_of(&text, "name = cs1")]
    );
}

#[test]
fn broken_table_header_stops_without_follow_on_errors() {
    let text = base_plus("[[service.backend]\nname = \"cs2\"\naddress = \"198.51.100.22:443\"\n");
    let error = only_error(&text);
    // BASE has 13 lines; the broken header is the 14th.
    assert_eq!(error.line, 14, "{error}");
}

#[test]
fn duplicate_key_is_reported() {
    let text = base_with("port = 443", "port = 443\nport = 444");
    let error = only_error(&text);
    assert_eq!(error.line, line_of(&text, "port = 444"));
}

// --- Unknown keys -----------------------------------------------------------------

#[test]
fn unknown_key_suggests_the_close_one() {
    let text = base_plus("wieght = 2\n");
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.backend.cs1.wieght",
        line_of(&text, "wieght"),
        "unknown key `wieght` (did you mean `weight`?)",
    );
    assert_eq!(error.column, 1);
}

#[test]
fn unknown_key_far_from_any_gets_no_suggestion() {
    let text = base_with(
        "interface = \"eth0\"",
        "interface = \"eth0\"\ncolour = \"blue\"",
    );
    let error = only_error(&text);
    assert_error(
        &error,
        "node.lb1.colour",
        line_of(&text, "colour"),
        "unknown key `colour`",
    );
    assert!(!error.message.contains("did you mean"), "{error}");
}

#[test]
fn unknown_top_level_table_is_reported() {
    let text = base_plus("[servce]\nname = \"x\"\n");
    let error = only_error(&text);
    assert_error(
        &error,
        "servce",
        line_of(&text, "[servce]"),
        "unknown table `servce` (did you mean `service`?)",
    );
}

#[test]
fn unknown_keys_in_limits_and_timeouts_are_reported() {
    let text = base_plus("[limits]\nflow = 10\n").replace(
        "port = 443\n",
        "port = 443\n[service.timeouts]\ntcp_establish = \"1h\"\n",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_error(
        &errors[0],
        "service.horizon.timeouts.tcp_establish",
        line_of(&text, "tcp_establish"),
        "did you mean `tcp_established`?",
    );
    assert_error(
        &errors[1],
        "limits.flow",
        line_of(&text, "flow = 10"),
        "did you mean `flows`?",
    );
}

// --- Types and required keys ------------------------------------------------------

#[test]
fn wrong_types_are_named() {
    let text =
        base_with("port = 443", "port = \"443\"").replace("vip = \"192.0.2.20\"", "vip = 19202");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_error(
        &errors[0],
        "service.horizon.vip",
        line_of(&text, "vip ="),
        "expected a string, found an integer",
    );
    assert_error(
        &errors[1],
        "service.horizon.port",
        line_of(&text, "port ="),
        "expected an integer, found a string",
    );
}

#[test]
fn service_must_be_an_array_of_tables() {
    let text =
        "[node.lb1]\ninterface = \"eth0\"\nsnat_ports = \"20000-20100\"\n[service]\nname = \"x\"\n";
    let error = only_error(text);
    assert_error(
        &error,
        "service",
        4,
        "expected an array of tables ([[service]]), found a table",
    );
}

#[test]
fn backend_array_elements_must_be_tables() {
    let text = base_with("port = 443\n", "port = 443\nbackend = [1]\n").replace(
        "[[service.backend]]\nname = \"cs1\"\naddress = \"198.51.100.21:443\"\n",
        "",
    );
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.backend[1]",
        line_of(&text, "backend = [1]"),
        "expected a table, found an integer",
    );
}

#[test]
fn timeouts_must_be_a_table() {
    let text = base_with("port = 443", "port = 443\ntimeouts = \"30s\"");
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.timeouts",
        line_of(&text, "timeouts ="),
        "expected a table",
    );
}

#[test]
fn missing_required_keys_point_at_the_table() {
    let text = base_with("port = 443\n", "").replace("address = \"198.51.100.21:443\"\n", "");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_error(
        &errors[0],
        "service.horizon.port",
        line_of(&text, "[[service]]"),
        "missing",
    );
    assert_error(
        &errors[1],
        "service.horizon.backend.cs1.address",
        line_of(&text, "[[service.backend]]"),
        "missing",
    );
}

#[test]
fn service_without_name_is_called_by_its_position() {
    let text = base_plus(
        "\n[[service]]\nvip = \"192.0.2.30\"\nport = 0\n[[service.backend]]\naddress = \"198.51.100.31:443\"\n",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 3, "{}", ConfigErrors(errors.clone()));
    let second = line_of(&text, "vip = \"192.0.2.30\"") - 1;
    assert_error(&errors[0], "service[2].name", second, "missing");
    assert_error(&errors[1], "service[2].port", second + 2, "out of range");
    assert_error(
        &errors[2],
        "service[2].backend[1].name",
        second + 3,
        "missing",
    );
}

#[test]
fn node_interface_is_required() {
    let text = base_with("interface = \"eth0\"\n", "");
    assert_error(&only_error(&text), "node.lb1.interface", 2, "missing");
}

// --- Values ---------------------------------------------------------------------------

#[test]
fn bad_ipv4_is_rejected() {
    let text = base_with("192.0.2.20", "192.0.2.300");
    assert_error(
        &only_error(&text),
        "service.horizon.vip",
        line_of(&text, "vip"),
        "not an IPv4 address",
    );
}

#[test]
fn non_unicast_vip_is_rejected() {
    for vip in ["0.0.0.0", "255.255.255.255", "224.0.0.18"] {
        let text = base_with("192.0.2.20", vip);
        assert_error(
            &only_error(&text),
            "service.horizon.vip",
            line_of(&text, "vip"),
            "not a unicast address",
        );
    }
}

#[test]
fn ipv6_is_not_supported_yet() {
    let text = base_with("\"192.0.2.20\"", "\"2001:db8::20\"")
        .replace("\"198.51.100.21:443\"", "\"[2001:db8::21]:443\"");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_error(
        &errors[0],
        "service.horizon.vip",
        line_of(&text, "vip"),
        "IPv6 is not supported yet",
    );
    assert_error(
        &errors[1],
        "service.horizon.backend.cs1.address",
        line_of(&text, "address"),
        "IPv6 is not supported yet",
    );
}

#[test]
fn ipv6_snat_address_is_not_supported_yet() {
    let text = base_with("port = 443", "port = 443\nsnat_address = \"2001:db8::1\"");
    assert_error(
        &only_error(&text),
        "service.horizon.snat_address",
        line_of(&text, "snat_address"),
        "IPv6",
    );
}

#[test]
fn service_port_zero_and_too_large_are_rejected() {
    for port in ["0", "65536", "70000", "-1"] {
        let text = base_with("port = 443", &format!("port = {port}"));
        let error = only_error(&text);
        assert_error(
            &error,
            "service.horizon.port",
            line_of(&text, "port ="),
            "out of range 1..=65535",
        );
        assert_eq!(error.column, 8);
    }
}

#[test]
fn backend_address_needs_a_valid_port() {
    for (address, part) in [
        ("198.51.100.21", "has no port"),
        ("198.51.100.21:0", "out of range"),
        ("198.51.100.21:65536", "out of range"),
        ("198.51.100.21:https", "not a port number"),
        ("198.51.100.321:443", "not an IPv4 address"),
    ] {
        let text = base_with("198.51.100.21:443", address);
        assert_error(
            &only_error(&text),
            "service.horizon.backend.cs1.address",
            line_of(&text, "address"),
            part,
        );
    }
}

#[test]
fn bad_durations_are_rejected() {
    let text = base_with(
        "port = 443",
        "port = 443\npersistence_timeout = \"1 parsec\"",
    );
    assert_error(
        &only_error(&text),
        "service.horizon.persistence_timeout",
        line_of(&text, "persistence"),
        "not a duration",
    );
    let text = base_with("port = 443", "port = 443\npersistence_timeout = 3600");
    assert_error(
        &only_error(&text),
        "service.horizon.persistence_timeout",
        line_of(&text, "persistence"),
        "expected a string",
    );
}

#[test]
fn zero_durations_are_rejected() {
    for key in [
        "tcp_established",
        "tcp_closing",
        "tcp_closed",
        "tcp_syn",
        "udp",
    ] {
        let text = base_with(
            "port = 443\n",
            &format!("port = 443\n[service.timeouts]\n{key} = \"0s\"\n"),
        );
        assert_error(
            &only_error(&text),
            &format!("service.horizon.timeouts.{key}"),
            line_of(&text, "\"0s\""),
            "greater than zero",
        );
    }
    let text = base_with("port = 443", "port = 443\npersistence_timeout = \"0ms\"");
    assert_error(
        &only_error(&text),
        "service.horizon.persistence_timeout",
        line_of(&text, "0ms"),
        "greater than zero",
    );
}

#[test]
fn weight_range_is_0_to_256() {
    for weight in ["257", "-1", "100000000000"] {
        let text = base_plus(&format!("weight = {weight}\n"));
        assert_error(
            &only_error(&text),
            "service.horizon.backend.cs1.weight",
            line_of(&text, "weight"),
            "out of range 0..=256",
        );
    }
    assert_eq!(
        ok(&base_plus("weight = 0\n")).services[0].backends[0].weight,
        0
    );
    assert_eq!(
        ok(&base_plus("weight = 256\n")).services[0].backends[0].weight,
        256
    );
}

#[test]
fn service_names_follow_the_charset() {
    let long = "a".repeat(33);
    for name in [
        "Horizon",
        "-horizon",
        "hori zon",
        "",
        long.as_str(),
        "horizon.pod",
    ] {
        let text = base_with("name = \"horizon\"", &format!("name = \"{name}\""));
        let error = only_error(&text);
        assert_error(
            &error,
            "service[1].name",
            line_of(&text, "vip") - 1,
            "invalid name",
        );
    }
    let max = "a".repeat(32);
    for name in ["horizon_2", "0-pod", max.as_str()] {
        ok(&base_with(
            "name = \"horizon\"",
            &format!("name = \"{name}\""),
        ));
    }
}

#[test]
fn backend_names_follow_the_charset() {
    let text = base_with("name = \"cs1\"", "name = \"CS1\"");
    assert_error(
        &only_error(&text),
        "service.horizon.backend[1].name",
        line_of(&text, "CS1"),
        "invalid name",
    );
}

#[test]
fn node_names_must_fit_in_paths() {
    let text = base_with("[node.lb1]", "[node.\"lb/1\"]");
    assert_error(&only_error(&text), "node.lb/1", 2, "invalid node name");
    // Host names with dots and capitals are fine.
    ok(&base_with("[node.lb1]", "[node.\"LB1.example.org\"]"));
}

#[test]
fn enumerations_reject_unknown_words() {
    let cases = [
        (
            "port = 443",
            "port = 443\nprotocol = \"sctp\"",
            "service.horizon.protocol",
            "expected `tcp` or `udp`",
        ),
        (
            "port = 443",
            "port = 443\nscheduler = \"roundrobin\"",
            "service.horizon.scheduler",
            "expected `source` or `flow`",
        ),
        (
            "port = 443",
            "port = 443\nmode = \"tunnel\"",
            "service.horizon.mode",
            "expected `nat`",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nxdp_mode = \"skb\"",
            "node.lb1.xdp_mode",
            "expected `native` or `generic`",
        ),
        (
            "interface = \"eth0\"",
            "interface = \"eth0\"\nsyn_cookies = \"on\"",
            "node.lb1.syn_cookies",
            "expected `auto` or `always` or `never`",
        ),
    ];
    for (from, to, key, part) in cases {
        let text = base_with(from, to);
        let needle = to.lines().nth(1).unwrap();
        assert_error(&only_error(&text), key, line_of(&text, needle), part);
    }
}

#[test]
fn dsr_is_not_supported_yet() {
    let text = base_with("port = 443", "port = 443\nmode = \"dsr\"");
    assert_error(
        &only_error(&text),
        "service.horizon.mode",
        line_of(&text, "dsr"),
        "`dsr` is not supported yet",
    );
}

#[test]
fn service_needs_a_backend() {
    let text = base_with(
        "[[service.backend]]\nname = \"cs1\"\naddress = \"198.51.100.21:443\"\n",
        "",
    );
    assert_error(
        &only_error(&text),
        "service.horizon.backend",
        line_of(&text, "[[service]]"),
        "no backend",
    );
}

// --- Nodes ------------------------------------------------------------------------------

#[test]
fn no_nodes_is_an_error() {
    let text = base_with(
        "[node.lb1]\ninterface = \"eth0\"\nsnat_ports = \"20000-24999\"\n",
        "",
    );
    assert_error(&only_error(&text), "node", 1, "no nodes defined");
    let text = base_with(
        "[node.lb1]\ninterface = \"eth0\"\nsnat_ports = \"20000-24999\"\n",
        "[node]\n",
    );
    assert_error(&only_error(&text), "node", 2, "no nodes defined");
}

#[test]
fn empty_or_oversized_interface_is_rejected() {
    let text = base_with("\"eth0\"", "\"\"");
    assert_error(
        &only_error(&text),
        "node.lb1.interface",
        3,
        "interface name is empty",
    );
    let text = base_with("\"eth0\"", "\"a-very-long-interface\"");
    assert_error(
        &only_error(&text),
        "node.lb1.interface",
        3,
        "longer than 15 bytes",
    );
}

#[test]
fn snat_port_ranges_are_checked() {
    for (range, part) in [
        ("25000-20000", "first port is above the last"),
        ("80-2000", "below 1024"),
        ("20000", "not a port range"),
        ("a-b", "not a port range"),
        ("20000-70000", "out of range"),
    ] {
        let text = base_with("20000-24999", range);
        assert_error(&only_error(&text), "node.lb1.snat_ports", 4, part);
    }
    let config = ok(&base_with("20000-24999", "1024-1024"));
    assert_eq!(
        config.nodes["lb1"].snat_ports,
        PortRange {
            min: 1024,
            max: 1024
        }
    );
}

#[test]
fn snat_range_must_not_contain_a_port_served_on_a_snat_address() {
    // Service port inside the range, on its own VIP (the default SNAT address).
    let text = base_with("port = 443", "port = 22000");
    let error = only_error(&text);
    assert_error(
        &error,
        "node.lb1.snat_ports",
        4,
        "contains port 22000 of service.horizon",
    );
    // The same port on a VIP that nobody SNATs to is harmless.
    let text = base_with("port = 443", "port = 22000\nsnat_address = \"203.0.113.9\"");
    ok(&text);
    // A service whose VIP another service uses as its SNAT address.
    let text = base_plus(
        "[[service]]\nname = \"other\"\nvip = \"192.0.2.40\"\nport = 23000\nsnat_address = \"203.0.113.9\"\n\
         [[service.backend]]\nname = \"b\"\naddress = \"198.51.100.40:80\"\n\
         [[service]]\nname = \"third\"\nvip = \"192.0.2.41\"\nport = 443\nsnat_address = \"192.0.2.40\"\n\
         [[service.backend]]\nname = \"b\"\naddress = \"198.51.100.41:80\"\n",
    );
    assert_error(
        &only_error(&text),
        "node.lb1.snat_ports",
        4,
        "contains port 23000 of service.other",
    );
}

#[test]
fn node_snat_ranges_must_not_overlap() {
    let text = base_plus("[node.lb2]\ninterface = \"eth0\"\nsnat_ports = \"24000-29999\"\n");
    // Appended after the backend: TOML puts [node.lb2] under `node` all the same.
    let error = only_error(&text);
    assert_error(
        &error,
        "node.lb2.snat_ports",
        line_of(&text, "24000-29999"),
        "overlaps 20000-24999 of node `lb1`",
    );
}

// --- Duplicates ---------------------------------------------------------------------

fn second_service(name: &str, vip: &str, port: u16, extra: &str) -> String {
    format!(
        "\n[[service]]\nname = \"{name}\"\nvip = \"{vip}\"\nport = {port}\n{extra}\
         [[service.backend]]\nname = \"x1\"\naddress = \"198.51.100.99:443\"\n"
    )
}

#[test]
fn duplicate_service_names_are_rejected() {
    let text = base_plus(&second_service("horizon", "192.0.2.30", 443, ""));
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.name",
        16,
        "duplicate service name `horizon`: already used on line 6",
    );
}

#[test]
fn duplicate_listeners_are_rejected() {
    let text = base_plus(&second_service("copy", "192.0.2.20", 443, ""));
    let error = only_error(&text);
    assert_error(
        &error,
        "service.copy.port",
        18,
        "192.0.2.20:443/tcp is already served by `service.horizon`",
    );
    // Same address and port over UDP is another listener.
    ok(&base_plus(&second_service(
        "copy",
        "192.0.2.20",
        443,
        "protocol = \"udp\"\n",
    )));
}

#[test]
fn duplicate_backends_are_rejected() {
    let text = base_plus("[[service.backend]]\nname = \"cs1\"\naddress = \"198.51.100.22:443\"\n");
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.backend.cs1.name",
        15,
        "duplicate backend name `cs1` in service.horizon: already used on line 11",
    );
    let text = base_plus("[[service.backend]]\nname = \"cs2\"\naddress = \"198.51.100.21:443\"\n");
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.backend.cs2.address",
        16,
        "already a backend of this service (line 11)",
    );
    // The same backend name in another service is fine.
    ok(&base_plus(
        &second_service("other", "192.0.2.30", 443, "").replace("x1", "cs1"),
    ));
}

// --- Limits ----------------------------------------------------------------------------

#[test]
fn maglev_size_must_be_prime() {
    let text = base_plus("[limits]\nmaglev_size = 65536\n");
    assert_error(
        &only_error(&text),
        "limits.maglev_size",
        line_of(&text, "65536"),
        "65536 is not prime",
    );
}

#[test]
fn maglev_size_must_hold_100_slots_per_backend() {
    let text = base_plus("[limits]\nmaglev_size = 97\n");
    assert_error(
        &only_error(&text),
        "limits.maglev_size",
        line_of(&text, "= 97"),
        "at least 100",
    );
    ok(&base_plus("[limits]\nmaglev_size = 101\n"));
    let two = base_plus(
        "[[service.backend]]\nname = \"cs2\"\naddress = \"198.51.100.22:443\"\n[limits]\nmaglev_size = 199\n",
    );
    assert_error(
        &only_error(&two),
        "limits.maglev_size",
        line_of(&two, "= 199"),
        "has 2 backends, so maglev_size must be at least 200",
    );
}

#[test]
fn max_services_must_cover_the_services() {
    let text = base_plus(&format!(
        "{}[limits]\nmax_services = 1\n",
        second_service("b", "192.0.2.30", 443, "")
    ));
    assert_error(
        &only_error(&text),
        "limits.max_services",
        line_of(&text, "max_services"),
        "2 services are defined but max_services is 1",
    );
}

#[test]
fn max_backends_reserves_id_zero() {
    let text = base_plus("[limits]\nmax_backends = 1\n");
    assert_error(
        &only_error(&text),
        "limits.max_backends",
        line_of(&text, "max_backends"),
        "1 backend needs max_backends of at least 2",
    );
    ok(&base_plus("[limits]\nmax_backends = 2\n"));
}

#[test]
fn sizes_of_zero_are_rejected() {
    for key in [
        "max_services",
        "max_backends",
        "maglev_size",
        "flows",
        "half_open",
        "persistence",
    ] {
        let text = base_plus(&format!("[limits]\n{key} = 0\n"));
        let errors = errors(&text);
        assert_error(
            &errors[0],
            &format!("limits.{key}"),
            line_of(&text, " = 0"),
            "at least 1",
        );
        // A zero limit is reported once, not again by the checks that use it.
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    }
    let text = base_plus("[limits]\nflows = 5000000000\n");
    assert_error(
        &only_error(&text),
        "limits.flows",
        line_of(&text, "flows"),
        "out of range",
    );
}

// --- All errors at once ------------------------------------------------------------

#[test]
fn independent_errors_are_all_reported_in_file_order() {
    let text = r#"[node.lb1]
interface = ""
snat_ports = "20000-24999"

[limits]
maglev_size = 1000

[[service]]
name = "horizon"
vip = "192.0.2.20"
port = 0
mode = "dsr"

[[service.backend]]
name = "cs1"
address = "198.51.100.21:443"
wieght = 2

[[service]]
name = "horizon"
vip = "192.0.2.30"
port = 443
persistence_timeout = "forever"

[[service.backend]]
name = "avm1"
address = "198.51.100.31"

[servce]
"#;
    let errors = errors(text);
    let got: Vec<(usize, &str)> = errors.iter().map(|e| (e.line, e.key.as_str())).collect();
    assert_eq!(
        got,
        [
            (2, "node.lb1.interface"),
            (6, "limits.maglev_size"),
            (11, "service.horizon.port"),
            (12, "service.horizon.mode"),
            (17, "service.horizon.backend.cs1.wieght"),
            (20, "service.horizon.name"),
            (23, "service.horizon.persistence_timeout"),
            (27, "service.horizon.backend.avm1.address"),
            (29, "servce"),
        ],
        "\n{}",
        ConfigErrors(errors.clone())
    );
    let rendered = ConfigErrors(errors).to_string();
    assert_eq!(rendered.lines().count(), 9);
    assert!(rendered.starts_with("lbd.toml:2:13: node.lb1.interface: the interface name is empty"));
}

// --- Node choice ---------------------------------------------------------------------

fn two_nodes() -> Config {
    ok(&base_plus(
        "[node.lb2]\ninterface = \"eth1\"\nsnat_ports = \"25000-29999\"\n",
    ))
}

#[test]
fn node_named_on_the_command_line_wins() {
    let config = two_nodes();
    let (name, node) = config.choose_node(Some("lb2"), Some("lb1")).unwrap();
    assert_eq!((name, node.interface.as_str()), ("lb2", "eth1"));
}

#[test]
fn unknown_named_node_lists_the_defined_ones() {
    let config = two_nodes();
    let error = config
        .choose_node(Some("lb3"), None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`lb3`") && error.contains("lb1, lb2"),
        "{error}"
    );
    // Even a single-node file does not silently replace an explicit name.
    assert!(ok(BASE).choose_node(Some("lb3"), Some("lb1")).is_err());
}

#[test]
fn hostname_picks_the_node() {
    let config = two_nodes();
    assert_eq!(config.choose_node(None, Some("lb2")).unwrap().0, "lb2");
    assert_eq!(
        config.choose_node(None, Some("lb1.example.org")).unwrap().0,
        "lb1"
    );
}

#[test]
fn single_node_is_chosen_whatever_the_hostname() {
    let config = ok(BASE);
    assert_eq!(config.choose_node(None, Some("somehost")).unwrap().0, "lb1");
    assert_eq!(config.choose_node(None, None).unwrap().0, "lb1");
}

#[test]
fn unmatched_hostname_with_several_nodes_is_an_error() {
    let config = two_nodes();
    let error = config
        .choose_node(None, Some("somehost"))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`somehost`") && error.contains("lb1, lb2") && error.contains("--node"),
        "{error}"
    );
    assert!(config.choose_node(None, None).is_err());
}

#[test]
fn node_uses_the_real_hostname() {
    let host = hostname().expect("this host has a name");
    let text = base_with("[node.lb1]", &format!("[node.\"{host}\"]"))
        + "[node.other]\ninterface = \"eth1\"\nsnat_ports = \"25000-29999\"\n";
    let config = ok(&text);
    assert_eq!(config.node(None).unwrap().0, host);
}

// --- Entry points and rendering ------------------------------------------------------

#[test]
fn check_summarises_a_valid_file() {
    let summary = check(&example_path()).unwrap();
    let first = summary.lines().next().unwrap();
    assert!(
        first.ends_with(": ok: 2 services, 4 backends, nodes: lb1, lb2"),
        "{summary}"
    );
    // Each service's SNAT ceiling on each node follows.
    assert_eq!(
        summary
            .lines()
            .filter(|l| l.contains("/s per backend"))
            .count(),
        4,
        "{summary}"
    );
}

#[test]
fn check_and_load_report_an_unreadable_file() {
    let missing = Path::new("/nonexistent/lbd.toml");
    let errors = check(missing).unwrap_err();
    assert_eq!(errors.len(), 1);
    let error = &errors.0[0];
    assert_eq!(error.line, 0);
    assert!(
        error
            .to_string()
            .starts_with("/nonexistent/lbd.toml: cannot read the config file"),
        "{error}"
    );
}

#[test]
fn error_renders_as_file_line_column_key_message() {
    let error = ConfigError {
        file: "lbd.toml".into(),
        line: 3,
        column: 7,
        key: "service.horizon.port".into(),
        message: "port 0 is out of range 1..=65535".into(),
    };
    assert_eq!(
        error.to_string(),
        "lbd.toml:3:7: service.horizon.port: port 0 is out of range 1..=65535"
    );
    let both = ConfigErrors(vec![error.clone(), error]);
    assert_eq!(both.to_string().lines().count(), 2);
    let _: &dyn std::error::Error = &both;
}

#[test]
fn columns_count_characters_not_bytes() {
    let line = r#"timeouts = { "é" = "1s", udpx = "1s" }"#;
    let text = base_with("port = 443", &format!("port = 443\n{line}"));
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_eq!(errors[0].key, "service.horizon.timeouts.é");
    assert_eq!(errors[0].column, 14);
    // `é` is two bytes but one column.
    let udpx = line[..line.find("udpx").unwrap()].chars().count() + 1;
    assert_eq!(
        (errors[1].key.as_str(), errors[1].column),
        ("service.horizon.timeouts.udpx", udpx)
    );
    assert!(
        errors[1].message.contains("did you mean `udp`?"),
        "{}",
        errors[1]
    );
}

#[test]
fn prime_is_right_on_small_and_ring_sizes() {
    let primes: Vec<u32> = (0..30).filter(|&n| values::prime(n)).collect();
    assert_eq!(primes, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
    assert!(values::prime(65537));
    assert!(!values::prime(65535));
    assert!(values::prime(4_294_967_291));
}

// --- Health checks ------------------------------------------------------------------

/// BASE with a `[service.check]` table holding `body`.
fn with_check(body: &str) -> String {
    base_with(
        "[[service.backend]]",
        &format!("[service.check]\n{body}\n\n[[service.backend]]"),
    )
}

#[test]
fn no_check_table_means_no_checks() {
    let config = ok(BASE);
    assert_eq!(config.services[0].backends[0].check, None);
}

#[test]
fn check_defaults_are_haproxys() {
    let config = ok(&with_check(""));
    let check = config.services[0].backends[0].check.clone().unwrap();
    assert_eq!(check, HealthCheck::new(CheckKind::Tcp));
    assert_eq!(check.inter, Duration::from_secs(2));
    assert_eq!((check.rise, check.fall), (2, 3));
    assert_eq!(check.timeout, Duration::from_secs(2));
    assert_eq!((check.fastinter, check.downinter), (None, None));
    assert_eq!(check.expect, [StatusMatch::Class(2), StatusMatch::Class(3)]);
    assert_eq!(check.path, "/");
    assert!(!check.verify);
}

#[test]
fn every_check_key_is_honoured() {
    let text = with_check(
        r#"kind = "https"
path = "/favicon.ico"
expect = [200, "3xx"]
host = "horizon.example.com"
sni = "horizon.example.com"
verify = true
inter = "30s"
fastinter = "2s"
downinter = "5s"
rise = 3
fall = 4
timeout = "1500ms"
port = 8443"#,
    );
    let check = ok(&text).services[0].backends[0].check.clone().unwrap();
    assert_eq!(
        check,
        HealthCheck {
            kind: CheckKind::Https,
            path: "/favicon.ico".into(),
            expect: vec![StatusMatch::Code(200), StatusMatch::Class(3)],
            host: Some("horizon.example.com".into()),
            sni: Some("horizon.example.com".into()),
            verify: true,
            inter: Duration::from_secs(30),
            fastinter: Some(Duration::from_secs(2)),
            downinter: Some(Duration::from_secs(5)),
            rise: 3,
            fall: 4,
            timeout: Duration::from_millis(1500),
            port: Some(8443),
        }
    );
}

#[test]
fn backend_check_keys_override_the_services() {
    let text = format!(
        "{}{}",
        with_check("kind = \"http\"\npath = \"/health\"\nrise = 3"),
        r#"check = { port = 8080, rise = 5 }

[[service.backend]]
name = "cs2"
address = "198.51.100.22:443"

[[service.backend]]
name = "cs3"
address = "198.51.100.23:443"
[service.backend.check]
kind = "tcp"
path = "/ignored"
"#
    );
    // cs3 turns the check into tcp, where a path means nothing: its own path is an error.
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.backend.cs3.check.path",
        line_of(&text, "/ignored"),
        "`path` is used by http and https checks only",
    );
    let text = text.replace("path = \"/ignored\"\n", "");
    let error = only_error(&text);
    // Now the service's path is the one that does not fit cs3's kind.
    assert_error(
        &error,
        "service.horizon.check.path",
        line_of(&text, "/health"),
        "service.horizon.backend.cs3's check is `tcp`",
    );
    let text = text.replace("kind = \"tcp\"", "fall = 1");
    let config = ok(&text);
    let checks: Vec<HealthCheck> = config.services[0]
        .backends
        .iter()
        .map(|b| b.check.clone().unwrap())
        .collect();
    assert_eq!(checks[0].port, Some(8080));
    assert_eq!((checks[0].rise, checks[0].fall), (5, 3));
    assert_eq!(checks[0].path, "/health");
    assert_eq!((checks[1].port, checks[1].rise), (None, 3));
    assert_eq!((checks[2].kind, checks[2].fall), (CheckKind::Http, 1));
}

#[test]
fn a_backend_check_alone_enables_checks_for_that_backend() {
    let text = base_plus("check = { kind = \"tls-hello\" }\n");
    let check = ok(&text).services[0].backends[0].check.clone().unwrap();
    assert_eq!(check, HealthCheck::new(CheckKind::TlsHello));
}

#[test]
fn bad_check_values_are_each_reported() {
    let text = with_check(
        r#"kind = "ssl-hello-chk"
rise = 0
fall = 1001
inter = "0s"
expect = [200, "6xx"]
port = 70000"#,
    );
    let errors = errors(&text);
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "service.horizon.check.kind",
            "service.horizon.check.rise",
            "service.horizon.check.fall",
            "service.horizon.check.inter",
            "service.horizon.check.expect",
            "service.horizon.check.port",
        ],
        "{}",
        ConfigErrors(errors.clone())
    );
    assert!(errors[0].message.contains("`tls-hello`"), "{}", errors[0]);
    assert!(errors[1].message.contains("1..=1000"), "{}", errors[1]);
    assert!(errors[4].message.contains("element 2"), "{}", errors[4]);
    assert_eq!(errors[4].line, line_of(&text, "6xx"));
}

#[test]
fn http_only_keys_on_a_tls_hello_check_are_errors() {
    let text =
        with_check("kind = \"tls-hello\"\nexpect = [200]\nverify = true\nsni = \"cs.example.com\"");
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    assert_error(
        &errors[0],
        "service.horizon.check.expect",
        line_of(&text, "expect"),
        "`expect` is used by http and https checks only, and this check is `tls-hello`",
    );
    assert_error(
        &errors[1],
        "service.horizon.check.verify",
        line_of(&text, "verify"),
        "used by https checks only",
    );
}

#[test]
fn check_paths_names_and_expect_are_validated() {
    let cases = [
        (
            "kind = \"http\"\npath = \"favicon.ico\"",
            "path",
            "does not start with `/`",
        ),
        ("kind = \"http\"\npath = \"/a b\"", "path", "spaces"),
        (
            "kind = \"https\"\nsni = \"198.51.100.21\"",
            "sni",
            "SNI carries DNS names only",
        ),
        (
            "kind = \"https\"\nsni = \"not a name\"",
            "sni",
            "not a DNS name",
        ),
        ("kind = \"http\"\nhost = \"\"", "host", "not a host name"),
        (
            "kind = \"http\"\nexpect = []",
            "expect",
            "no status would count as healthy",
        ),
        (
            "kind = \"http\"\nexpect = [99]",
            "expect",
            "out of range 100..=599",
        ),
        (
            "verify = \"yes\"\nkind = \"https\"",
            "verify",
            "expected true or false",
        ),
        (
            "kind = \"http\"\nexpect = \"200\"",
            "expect",
            "expected an array",
        ),
        (
            "kind = \"http\"\nintre = \"1s\"",
            "intre",
            "did you mean `inter`?",
        ),
    ];
    for (body, key, message) in cases {
        let text = with_check(body);
        let error = only_error(&text);
        assert_eq!(error.key, format!("service.horizon.check.{key}"), "{error}");
        assert!(error.message.contains(message), "{error} lacks `{message}`");
    }
}

#[test]
fn check_must_be_a_table() {
    let text = base_plus("check = \"tcp\"\n");
    let error = only_error(&text);
    assert_error(
        &error,
        "service.horizon.backend.cs1.check",
        line_of(&text, "check ="),
        "expected a table",
    );
}

#[test]
fn horizon_example_checks_like_the_seed() {
    // HAProxy: `option ssl-hello-chk` and
    // `check inter 30s fastinter 2s downinter 5s rise 3 fall 3`.
    let config = load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    for service in &config.services {
        for backend in &service.backends {
            let check = backend.check.as_ref().expect("every backend is checked");
            assert_eq!(check.kind, CheckKind::TlsHello, "{}", backend.name);
            assert_eq!(check.inter, Duration::from_secs(30));
            assert_eq!(check.fastinter, Some(Duration::from_secs(2)));
            assert_eq!(check.downinter, Some(Duration::from_secs(5)));
            assert_eq!((check.rise, check.fall), (3, 3));
            assert_eq!(check.port, None);
        }
    }
}
