//! Builds the XDP program (crate lb-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and bpf-linker; the agent embeds the object.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    // The program also compiles lb-common (map layouts, reason codes);
    // aya-build watches only the lb-ebpf directory.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-common/src")
    );
    let root_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../lb-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "lb-ebpf",
            root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
