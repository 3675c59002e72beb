//! The agent's interface between two looks: removed, re-created under the
//! same name (a driver reload, a veth or VLAN deleted and added again), its
//! MTU changed, its link down or up. Each change is reported once; the
//! agent logs it and, for a re-created device, attaches the XDP program to
//! the new one (an XDP attachment dies with its device).
//!
//! [`IfaceWatch`] is pure (looks in, changes out); [`look`] is the I/O.

/// What one look at the interface found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfaceSeen {
    /// None while no interface has the name.
    pub index: Option<u32>,
    pub mtu: Option<u32>,
    /// Up and with a carrier (IFF_UP and IFF_RUNNING).
    pub running: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfaceChange {
    /// No interface has the name any more.
    Gone,
    /// An interface has the name again, or under another index than the one
    /// the program is attached to: a new device, which needs the program.
    /// `from`: the device before it, whose flows move to the new one.
    Recreated {
        from: Option<u32>,
        index: u32,
    },
    Mtu {
        from: u32,
        to: u32,
    },
    LinkDown,
    LinkUp,
}

#[derive(Clone, Debug)]
pub struct IfaceWatch {
    last: IfaceSeen,
    /// The last device seen under the name, kept while none is.
    known: Option<u32>,
}

impl IfaceWatch {
    /// `first`: the interface as the agent attached to it.
    pub fn new(first: IfaceSeen) -> Self {
        IfaceWatch {
            last: first,
            known: first.index,
        }
    }

    /// The changes since the previous look, in the order they matter.
    pub fn observe(&mut self, now: IfaceSeen) -> Vec<IfaceChange> {
        let before = std::mem::replace(&mut self.last, now);
        let from = self.known;
        if now.index.is_some() {
            self.known = now.index;
        }
        match (before.index, now.index) {
            (Some(_), None) => vec![IfaceChange::Gone],
            (None, None) => Vec::new(),
            (None, Some(index)) => vec![IfaceChange::Recreated { from, index }],
            (Some(old), Some(index)) if old != index => {
                vec![IfaceChange::Recreated { from, index }]
            }
            (Some(_), Some(_)) => {
                let mut changes = Vec::new();
                if let (Some(from), Some(to)) = (before.mtu, now.mtu) {
                    if from != to {
                        changes.push(IfaceChange::Mtu { from, to });
                    }
                }
                match (before.running, now.running) {
                    (true, false) => changes.push(IfaceChange::LinkDown),
                    (false, true) => changes.push(IfaceChange::LinkUp),
                    _ => {}
                }
                changes
            }
        }
    }
}

/// Looks at `name` in the calling thread's network namespace (netlink and
/// ioctl answer for it; sysfs would answer for the namespace it was mounted
/// in).
pub fn look(name: &str) -> IfaceSeen {
    let index = crate::dataplane::load::if_index(name).ok();
    IfaceSeen {
        index,
        mtu: index.and_then(|_| mtu(name)),
        running: index.is_some() && crate::vrrp::runtime::probes::link_running(name),
    }
}

/// SIOCGIFMTU on a throwaway datagram socket.
fn mtu(name: &str) -> Option<u32> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: plain socket(2); checked and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: all-zero is a valid ifreq; the name fits (checked above) and
    // stays NUL-terminated.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu of `req`.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFMTU, &mut req) };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    // SAFETY: the union member SIOCGIFMTU wrote.
    (rc == 0).then(|| unsafe { req.ifr_ifru.ifru_mtu } as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(index: Option<u32>, mtu: u32, running: bool) -> IfaceSeen {
        IfaceSeen {
            index,
            mtu: index.map(|_| mtu),
            running,
        }
    }

    #[test]
    fn nothing_changed_reports_nothing() {
        let mut w = IfaceWatch::new(seen(Some(2), 1500, true));
        assert!(w.observe(seen(Some(2), 1500, true)).is_empty());
    }

    #[test]
    fn mtu_and_link_changes_are_reported_once() {
        let mut w = IfaceWatch::new(seen(Some(2), 1500, true));
        assert_eq!(
            w.observe(seen(Some(2), 1400, false)),
            [
                IfaceChange::Mtu {
                    from: 1500,
                    to: 1400
                },
                IfaceChange::LinkDown
            ]
        );
        assert!(w.observe(seen(Some(2), 1400, false)).is_empty());
        assert_eq!(w.observe(seen(Some(2), 1400, true)), [IfaceChange::LinkUp]);
    }

    #[test]
    fn a_removed_and_recreated_device_is_reported_as_such() {
        let mut w = IfaceWatch::new(seen(Some(2), 1500, true));
        assert_eq!(w.observe(seen(None, 0, false)), [IfaceChange::Gone]);
        assert!(w.observe(seen(None, 0, false)).is_empty());
        // Back under a new index, even down at first: it needs the program.
        assert_eq!(
            w.observe(seen(Some(7), 1500, false)),
            [IfaceChange::Recreated {
                from: Some(2),
                index: 7
            }]
        );
        assert_eq!(w.observe(seen(Some(7), 1500, true)), [IfaceChange::LinkUp]);
    }

    #[test]
    fn a_device_replaced_between_two_looks_is_recreated() {
        let mut w = IfaceWatch::new(seen(Some(2), 1500, true));
        assert_eq!(
            w.observe(seen(Some(9), 9000, true)),
            [IfaceChange::Recreated {
                from: Some(2),
                index: 9
            }]
        );
    }

    #[test]
    fn look_sees_loopback_and_not_a_missing_name() {
        let lo = look("lo");
        assert!(lo.index.is_some() && lo.running);
        assert!(lo.mtu.is_some_and(|m| m > 0));
        assert_eq!(
            look("lbd-no-such-if0"),
            IfaceSeen {
                index: None,
                mtu: None,
                running: false
            }
        );
    }
}
