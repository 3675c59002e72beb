//! A spoofed SYN flood against a VIP, in a single-node namespace lab: lb1
//! balances the VIP over three echo servers with `syn_cookies = "auto"`.
//! The client namespace holds [`HELD`] established connections, then
//! floods the VIP for [`FLOOD`] with SYNs from 254 addresses nobody in the
//! lab owns ([`lb_tests::lab::flood`]); a second into it, [`CLIENTS`]
//! client addresses open new connections.
//!
//! Counted, not timed:
//! - every new connection succeeds, and every held connection echoes before,
//!   during and after the flood;
//! - SYN cookies answered most of the flood (`tx_syn_cookie`), no SYN was
//!   refused for want of a SNAT port or a handshake entry
//!   (`drop_snat_exhausted`, `drop_half_open_full`);
//! - no spoofed source has an established entry, and the handshakes spoofed
//!   sources hold stay within what `auto` admits before cookies take over
//!   (`syn_cookie_rate` per CPU and second, half the SNAT range over the
//!   handshake timeout; see docs/architecture.md, "SYN cookies").
//!
//! Needs root and lbd built next to this test (`cargo build -p lb-userspace
//! --bin lbd` with the same profile). Fails, not skips, without either.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lb_tests::lab::flood::{FloodLimits, FloodReport, is_spoofed};
use lb_tests::lab::{Lab, ServiceConfig, counters, echo_all};

const CLIENTS: usize = 100;
const HELD: usize = 100;
/// The flood runs this long whatever the rest does, the legitimate traffic
/// in its middle, at a rate the lab forwards without losing frames on this
/// 2-core machine. Beyond it (one thread writes 150,000-200,000 a second
/// here) the lab's veths drop frames at random, the clients' cookie ACKs
/// among them, and a client whose ACK is lost believes it is connected
/// while the backend never hears of it: with a protocol where the server
/// speaks first (SMTP, this lab's echo servers) it waits for nothing, as
/// with the kernel's own SYN cookies.
const FLOOD: FloodLimits = FloodLimits {
    duration: Duration::from_secs(6),
    max_frames: 20_000_000,
    per_second: Some(50_000),
};
/// The flood's sources, ports and sequence numbers (`LB_FLOOD_SEED` to try
/// another).
const SEED: u64 = 0x5eed_f10d;
/// The lab config's SNAT range, 20000-29999.
const SNAT_PORTS: usize = 10_000;

#[test]
fn spoofed_syn_flood_costs_no_legitimate_connection() {
    // SAFETY: plain syscall.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "lab_syn_flood must run as root"
    );
    let seed = std::env::var("LB_FLOOD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let lab = Lab::datapath("sf", 3, CLIENTS).expect("lab builds");
    lab.start_backend_servers(80)
        .expect("backend servers start");
    let vip = SocketAddrV4::new(lab.vip(), 80);
    let service = ServiceConfig::tcp("web", lab.vip(), 80, lab.backend_configs(80, &[]));
    let mut config = lab.lbd_config(vec![service]);
    for node in config.nodes.values_mut() {
        node.syn_cookies = Some("auto".into());
    }
    let config = lab.write_config("lbd.toml", &config).unwrap();
    let mut lbd = lab.start_lbd(1, &config).expect("lbd starts");
    lab.wait_for_service(&mut lbd, vip, Duration::from_secs(15))
        .expect("the VIP answers");
    let pin_dir = lab.lbd_pin_dir(1);

    let sources: Vec<Ipv4Addr> = lab.client_addrs().into_iter().take(HELD).collect();
    let mut held = lab
        .open_held(sources, vip, Duration::from_secs(5))
        .expect("the held connections open");
    echo_all(&mut held, "before");

    let stop = AtomicBool::new(false);
    let (flood, spread) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| lab.syn_flood(1, vip, seed, FLOOD, &stop));
        // Stops the flood however the rest ends, so the scope can join it.
        let _stop_flood = StopOnDrop(&stop);
        // Cookies are on once a CPU has seen its second's share of SYNs;
        // a second of flood is far past that.
        std::thread::sleep(Duration::from_secs(1));
        let spread = lab.spread(vip, CLIENTS, 1, &[]);
        echo_all(&mut held, "during");
        let during = counters::client_entries(&pin_dir);
        let flood: FloodReport = flood
            .join()
            .expect("the flood thread")
            .expect("the flood runs");
        (flood, (spread, during))
    });
    let (spread, during) = spread;
    echo_all(&mut held, "after");
    let spread = spread.expect("lab-client spread runs");
    let during = during.expect("lbd's tables are readable");
    let after = counters::read_pinned(&pin_dir).expect("lbd's counters are readable");
    let reason = |label: &str| {
        after
            .reasons
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0, |(_, c)| *c)
    };
    let spoofed_half_open = during.half_open.iter().filter(|a| is_spoofed(**a)).count();
    let spoofed_flows = during.flows.iter().filter(|a| is_spoofed(**a)).count();
    println!(
        "flood: {} spoofed SYNs in {:.1?} ({:.0}/s, seed {seed:#x})",
        flood.sent,
        flood.elapsed,
        flood.per_second()
    );
    println!(
        "  during it: {} new connections, {} failed; {HELD} held connections echoed",
        spread.attempts, spread.errors
    );
    println!(
        "  tx_syn_cookie {}, syn_cookie_ok {}, drop_snat_exhausted {}, drop_half_open_full {}",
        reason("tx_syn_cookie"),
        reason("syn_cookie_ok"),
        reason("drop_snat_exhausted"),
        reason("drop_half_open_full")
    );
    println!(
        "  entries of spoofed sources: {spoofed_half_open} handshakes, {spoofed_flows} established \
         (of {} and {} client entries)",
        during.half_open.len(),
        during.flows.len()
    );
    println!("  reasons: {:?}", after.reasons);

    assert_eq!(
        spread.errors, 0,
        "legitimate connections failed under the flood: {:?}",
        spread.error_samples
    );
    assert_eq!(spread.attempts, CLIENTS as u64);
    assert!(
        flood.sent >= 100_000,
        "the flood sent only {} SYNs: not a flood",
        flood.sent
    );
    assert!(
        reason("tx_syn_cookie") * 2 >= flood.sent,
        "fewer than half the spoofed SYNs were answered with cookies"
    );
    assert_eq!(reason("drop_snat_exhausted"), 0, "SYNs found no SNAT port");
    assert_eq!(
        reason("drop_half_open_full"),
        0,
        "SYNs found no handshake entry"
    );
    assert_eq!(
        spoofed_flows, 0,
        "a spoofed source has an established entry"
    );
    assert!(
        spoofed_half_open <= SNAT_PORTS / 2,
        "spoofed sources hold {spoofed_half_open} handshakes, more than auto admits"
    );
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
