//! The peer lab as a benchmark (`lb-peer-bench`, run by `cargo xtask
//! bench`): HTTP requests through lbd, through nftables DNAT + masquerade,
//! and straight to a backend, in one namespace lab, with keep-alive and
//! connection-per-request load. The parts that need no root live here and
//! are unit-tested; the binary runs the lab.

pub mod cpu;
pub mod netstat;
pub mod nftables;
pub mod nginx;
pub mod results;
pub mod wrk;
