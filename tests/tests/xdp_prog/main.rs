//! Correctness of the XDP program `lb`, case by case, against the behaviour
//! spec (docs/architecture.md, "The path of a packet"), through
//! BPF_PROG_TEST_RUN on crafted frames.
//!
//! Needs root: run with
//! `cargo test -p lb-tests --test xdp_prog -- --test-threads=1` (each case has
//! its own namespace, so parallel runs work too).
//! Every case loads a fresh program in a fresh namespace, writes the maps it
//! needs, runs frames and asserts the verdict, every field of the frame that
//! comes back (against a frame built independently), its checksums, and every
//! map the case may touch.
//!
//! One file per part of the program; `support` holds the lab, the connection
//! model and the assertions. Cases of one shape are rows of a table (named
//! after the case): the table's test runs every row on its own lab and names
//! every failing row. To run one file's cases, filter by its module name:
//! `cargo test -p lb-tests --test xdp_prog -- parsing::`.

mod established;
mod handshake_and_close;
mod icmp;
mod lease;
mod new_flow;
mod parsing;
mod reply;
mod rst;
mod snat_ports;
mod support;
mod udp;
