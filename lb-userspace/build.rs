//! Builds the XDP program (crate lb-ebpf) for bpfel-unknown-none with the
//! nightly toolchain and bpf-linker; the agent embeds the object.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
