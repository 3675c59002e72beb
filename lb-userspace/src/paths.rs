//! Where lbd keeps its per-node runtime files: the control socket, the lock
//! with the agent's pid, the health file and the VRRP AH sequence number.

/// Root-only runtime directory, emptied at boot (tmpfs).
pub const RUN_DIR: &str = "/run/lbd";
