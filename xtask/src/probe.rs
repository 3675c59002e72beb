//! Pure readers for what the machine tells us about itself: the output of
//! `rustup`, `bpf-linker --version`, `dpkg-query`, `/proc/mounts` and the
//! kernel release. Kept free of I/O so the decisions setup makes are tested.

use std::collections::BTreeSet;

/// True when `rustup toolchain list` shows the plain `nightly` channel.
///
/// aya-build runs `rustup run nightly ...`, which needs exactly that
/// toolchain; a dated one (`nightly-2026-01-01-...`) does not satisfy it.
pub fn has_nightly(toolchain_list: &str) -> bool {
    toolchain_list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| {
            name == "nightly"
                || name
                    .strip_prefix("nightly-")
                    .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
        })
}

/// True when `rustup component list --installed` names `component`, either
/// bare (`rust-src`) or with a target triple (`rust-std-x86_64-unknown-linux-gnu`).
pub fn has_component(installed: &str, component: &str) -> bool {
    installed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| {
            name == component
                || name
                    .strip_prefix(component)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|triple| triple.split('-').count() >= 3)
        })
}

/// The version a tool reports as `NAME VERSION` on its first line
/// (`bpf-linker 0.10.3` gives `0.10.3`).
pub fn tool_version(output: &str) -> Option<&str> {
    output.lines().next()?.split_whitespace().nth(1)
}

/// Packages that `dpkg-query -W -f='${Package}\t${Status}\n'` reports as
/// installed. Other states (config-files, half-installed, not-installed)
/// count as missing so that setup installs them again.
pub fn installed_packages(dpkg_output: &str) -> BTreeSet<&str> {
    dpkg_output
        .lines()
        .filter_map(|line| {
            let (package, status) = line.split_once('\t')?;
            (status.split_whitespace().nth(2) == Some("installed")).then_some(package.trim())
        })
        .collect()
}

/// The wanted packages that are not in `installed`, in the order wanted.
pub fn missing_packages<'a>(wanted: &[&'a str], installed: &BTreeSet<&str>) -> Vec<&'a str> {
    wanted
        .iter()
        .copied()
        .filter(|package| !installed.contains(package))
        .collect()
}

/// True when `/proc/mounts` shows a bpf filesystem mounted at `mount_point`.
pub fn bpffs_mounted(proc_mounts: &str, mount_point: &str) -> bool {
    proc_mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let _source = fields.next();
        fields.next() == Some(mount_point) && fields.next() == Some("bpf")
    })
}

/// Major and minor version of a kernel release string (`6.1.0-28-amd64`).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_channel_is_found_but_dated_nightlies_are_not() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        let dated = "stable-x86_64-unknown-linux-gnu (default)\n\
                     nightly-2026-01-15-x86_64-unknown-linux-gnu\n";
        assert!(!has_nightly(dated));
        assert!(!has_nightly("no installed toolchains\n"));
    }

    #[test]
    fn rust_src_is_recognised_bare_and_not_confused_with_rust_std() {
        let installed = "cargo-x86_64-unknown-linux-gnu\n\
                         rust-src\n\
                         rust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(installed, "rust-src"));
        assert!(has_component(installed, "rust-std"));
        assert!(has_component(installed, "cargo"));
        let without = "cargo-x86_64-unknown-linux-gnu\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(!has_component(without, "rust-src"));
        assert!(!has_component("rust-src-extra\n", "rust-src"));
    }

    #[test]
    fn tool_version_reads_the_second_word_of_the_first_line() {
        assert_eq!(tool_version("bpf-linker 0.10.3\n"), Some("0.10.3"));
        assert_eq!(tool_version("bpf-linker 0.11.0\nextra\n"), Some("0.11.0"));
        assert_eq!(tool_version(""), None);
        assert_eq!(tool_version("bpf-linker\n"), None);
    }

    #[test]
    fn dpkg_states_other_than_installed_count_as_missing() {
        let output = "iproute2\tinstall ok installed\n\
                      keepalived\thold ok installed\n\
                      nftables\tdeinstall ok config-files\n\
                      tcpdump\tinstall ok half-configured\n";
        let installed = installed_packages(output);
        assert_eq!(
            installed.into_iter().collect::<Vec<_>>(),
            ["iproute2", "keepalived"]
        );
        let wanted = ["iproute2", "nftables", "chromium", "keepalived", "tcpdump"];
        assert_eq!(
            missing_packages(&wanted, &installed_packages(output)),
            ["nftables", "chromium", "tcpdump"]
        );
    }

    #[test]
    fn bpffs_must_be_a_bpf_mount_at_the_exact_path() {
        let mounts = "sysfs /sys sysfs rw,nosuid 0 0\n\
                      bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";
        assert!(bpffs_mounted(mounts, "/sys/fs/bpf"));
        assert!(!bpffs_mounted(
            "tmpfs /sys/fs/bpf tmpfs rw 0 0\n",
            "/sys/fs/bpf"
        ));
        assert!(!bpffs_mounted(
            "bpf /sys/fs/bpf/lb bpf rw 0 0\n",
            "/sys/fs/bpf"
        ));
    }

    #[test]
    fn kernel_version_parses_distribution_release_strings() {
        assert_eq!(kernel_version("6.1.0-28-amd64\n"), Some((6, 1)));
        assert_eq!(kernel_version("6.18.0"), Some((6, 18)));
        assert_eq!(
            kernel_version("5.15.167.4-microsoft-standard-WSL2"),
            Some((5, 15))
        );
        assert_eq!(kernel_version("garbage"), None);
    }
}
