//! A Debian VM under QEMU that boots systemd as PID 1, for testing lbd as a
//! real service (tests/tests/vm_systemd.rs): this machine has no systemd as
//! PID 1 and no container engine.
//!
//! The base image ([`image`]) is generic and cached; everything a run needs
//! goes on a second disk, the stage, whose `run.sh` the image's
//! `lb-vm-stage.service` runs at boot before powering off ([`qemu`]).

pub mod image;
pub mod qemu;
