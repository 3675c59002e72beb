//! Raw IPv4 sockets for VRRP adverts on one interface.
//!
//! Receiving: one raw socket for protocol 112 (VRRP) and, when the instance
//! uses AH, one for protocol 51. Both are bound to the interface
//! (SO_BINDTODEVICE) so adverts of another segment never reach this instance,
//! and both join 224.0.0.18 there. Linux hands raw IPv4 sockets the whole
//! datagram, IP header included and unmodified, so the source, destination
//! and TTL come from the header itself (`check::check_advert` wants exactly
//! these bytes).
//!
//! Sending: every advert leaves whole, IP header built here (IP_HDRINCL),
//! because an AH ICV covers the header and keepalived builds it with TTL 255,
//! TOS 0xc0 and a nonzero id. Plain adverts go out the same way so both kinds
//! look alike on the wire. Multicast loop is off: our own adverts must not
//! come back to us as if a peer sent them.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::num::NonZeroU32;

use anyhow::{Context, Result, bail};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::ah::PROTO_AH;
use super::ipv4::Ipv4Header;
use super::packet::PROTO_VRRP;

/// The VRRP multicast group (RFC 5798 section 5.1.1.2).
pub const VRRP_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

/// Larger than any advert: 20 (IP) + 24 (AH) + 8 + 255 * 4 + 8.
const RECV_BUFFER: usize = 2048;

/// One datagram as the kernel delivered it, with what the checks need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub protocol: u8,
    /// The whole IPv4 datagram, header included.
    pub bytes: Vec<u8>,
}

/// The receive and send sockets of one VRRP instance on one interface.
pub struct VrrpSocket {
    vrrp: AsyncFd<Socket>,
    ah: Option<AsyncFd<Socket>>,
    iface: String,
}

impl VrrpSocket {
    /// Opens the sockets on `iface`, in the calling thread's network
    /// namespace; `with_ah` adds the protocol 51 socket. Needs CAP_NET_RAW
    /// and a tokio runtime (the fds are registered with its reactor).
    pub fn open(iface: &str, with_ah: bool) -> Result<Self> {
        let ifindex = interface_index(iface)?;
        let vrrp = raw_socket(iface, ifindex, PROTO_VRRP)?;
        // The send side lives on the VRRP socket: setting IP_HDRINCL there
        // changes nothing for what it receives.
        vrrp.set_header_included_v4(true)
            .context("setting IP_HDRINCL to send whole VRRP datagrams")?;
        vrrp.set_multicast_loop_v4(false)
            .context("turning multicast loop off on the VRRP socket")?;
        let ah = match with_ah {
            true => Some(raw_socket(iface, ifindex, PROTO_AH)?),
            false => None,
        };
        let register = |socket: Socket| {
            // SAFETY: the socket owns its fd, which stays open and the same
            // for as long as the AsyncFd holds it.
            unsafe { AsyncFd::register(socket) }
                .map_err(|e| e.into_parts().1)
                .with_context(|| {
                    format!("registering the VRRP socket on {iface} with the tokio reactor")
                })
        };
        Ok(VrrpSocket {
            vrrp: register(vrrp)?,
            ah: ah.map(register).transpose()?,
            iface: iface.to_string(),
        })
    }

    /// The next datagram of protocol 112 or (with AH) 51. Datagrams too
    /// short for an IPv4 header are skipped (the kernel never delivers
    /// them on a raw socket, but the bytes are not ours to trust).
    pub async fn recv(&self) -> io::Result<Datagram> {
        loop {
            let bytes = match &self.ah {
                None => read_one(&self.vrrp).await?,
                Some(ah) => tokio::select! {
                    bytes = read_one(&self.vrrp) => bytes?,
                    bytes = read_one(ah) => bytes?,
                },
            };
            if let Ok(ip) = Ipv4Header::parse(&bytes) {
                return Ok(Datagram {
                    src: ip.src,
                    dst: ip.dst,
                    ttl: ip.ttl,
                    protocol: ip.protocol,
                    bytes,
                });
            }
        }
    }

    /// Sends a plain advert (the encoded VRRP packet) from `src` to `dst`
    /// (a unicast peer or `VRRP_GROUP`) with TTL 255 and TOS 0xc0.
    pub async fn send_advert(
        &self,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ip_id: u16,
        vrrp: &[u8],
    ) -> Result<()> {
        let header = Ipv4Header::advert(src, dst, PROTO_VRRP, ip_id, vrrp.len()).encode();
        let mut datagram = Vec::with_capacity(header.len() + vrrp.len());
        datagram.extend_from_slice(&header);
        datagram.extend_from_slice(vrrp);
        self.send_datagram(dst, &datagram).await
    }

    /// Sends a whole IPv4 datagram (as `ah::build_ah_packet` returns) to
    /// `dst`, which must be the header's destination.
    pub async fn send_datagram(&self, dst: Ipv4Addr, datagram: &[u8]) -> Result<()> {
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        let send = || {
            self.vrrp
                .async_io(tokio::io::Interest::WRITABLE, |s| s.send_to(datagram, &to))
        };
        let sent = match send().await {
            // SO_BINDTODEVICE holds the index the name had: a device deleted
            // and created again under the name (a driver reload) leaves the
            // socket on the dead one. Binding to the name again moves it, so
            // a master's last advert (priority 0, before the agent starts
            // VRRP on the new device) still reaches the peer.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) && self.rebind() => send().await,
            other => other,
        }
        .with_context(|| format!("sending a VRRP advert to {dst} on {}", self.iface))?;
        if sent != datagram.len() {
            bail!(
                "the kernel sent {sent} of {} bytes of a VRRP advert to {dst} on {}",
                datagram.len(),
                self.iface
            );
        }
        Ok(())
    }
}

impl VrrpSocket {
    /// Binds the sockets to the device now named by the interface name;
    /// false when there is none (the error to report is the send's).
    fn rebind(&self) -> bool {
        let sockets = std::iter::once(&self.vrrp).chain(self.ah.as_ref());
        sockets
            .map(|fd| fd.get_ref().bind_device(Some(self.iface.as_bytes())))
            .all(|bound| bound.is_ok())
    }
}

/// A nonblocking raw socket for `protocol`, bound to the interface and a
/// member of the VRRP group there.
fn raw_socket(iface: &str, ifindex: NonZeroU32, protocol: u8) -> Result<Socket> {
    let what = format!("the raw socket for IP protocol {protocol} on {iface}");
    let socket = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(i32::from(protocol))),
    )
    .with_context(|| format!("opening {what} (needs CAP_NET_RAW)"))?;
    socket
        .bind_device(Some(iface.as_bytes()))
        .with_context(|| format!("binding {what} to the interface"))?;
    socket
        .join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(ifindex.get()))
        .with_context(|| format!("joining {VRRP_GROUP} with {what}"))?;
    socket
        .set_nonblocking(true)
        .with_context(|| format!("making {what} nonblocking"))?;
    Ok(socket)
}

/// Reads one datagram once the socket is readable.
async fn read_one(fd: &AsyncFd<Socket>) -> io::Result<Vec<u8>> {
    let mut buffer = vec![0u8; RECV_BUFFER];
    let len = fd
        .async_io(tokio::io::Interest::READABLE, |s| {
            let mut s: &Socket = s;
            s.read(&mut buffer)
        })
        .await?;
    buffer.truncate(len);
    Ok(buffer)
}

/// The kernel's index of `iface` in the calling thread's namespace.
pub fn interface_index(iface: &str) -> Result<NonZeroU32> {
    let name = std::ffi::CString::new(iface)
        .with_context(|| format!("the interface name {iface:?} contains a NUL byte"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    NonZeroU32::new(index).with_context(|| {
        format!(
            "interface {iface} not found: {}",
            io::Error::last_os_error()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn ip(args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("ip runs");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `name` as one end of a veth pair, up, with 198.51.100.1/24 (the
    /// peer end is `name`p).
    fn make_link(name: &str) {
        let peer = format!("{name}p");
        ip(&["link", "add", name, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", name, "up"]);
        ip(&["link", "set", &peer, "up"]);
        ip(&["addr", "add", "198.51.100.1/24", "dev", name]);
    }

    /// Needs root (a network namespace of its own, veth devices); fails
    /// without it.
    #[test]
    fn adverts_follow_a_device_recreated_under_the_same_name() {
        // SAFETY: plain syscall.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        // A thread of its own in a fresh namespace: `ip` children inherit
        // it, the rest of the test process keeps its own.
        std::thread::spawn(|| {
            // SAFETY: CLONE_NEWNET moves only the calling thread.
            assert_eq!(
                unsafe { libc::unshare(libc::CLONE_NEWNET) },
                0,
                "unshare: {}",
                std::io::Error::last_os_error()
            );
            ip(&["link", "set", "lo", "up"]);
            make_link("vrrpt0");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .unwrap();
            runtime.block_on(async {
                let socket = VrrpSocket::open("vrrpt0", false).expect("the socket opens");
                let (src, dst) = (
                    Ipv4Addr::new(198, 51, 100, 1),
                    Ipv4Addr::new(198, 51, 100, 2),
                );
                let advert = [0x31u8, 1, 100, 0, 0, 100, 0, 0];
                socket
                    .send_advert(src, dst, 1, &advert)
                    .await
                    .expect("an advert goes out on the first device");
                ip(&["link", "delete", "vrrpt0"]);
                let gone = socket.send_advert(src, dst, 2, &advert).await;
                assert!(gone.is_err(), "an advert went out with no device");
                make_link("vrrpt0");
                socket
                    .send_advert(src, dst, 3, &advert)
                    .await
                    .expect("an advert goes out on the re-created device");
            });
        })
        .join()
        .expect("the namespace thread finished");
    }
}
