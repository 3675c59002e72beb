//! Listening sockets for the admin page and the redirects. They bind with
//! IP_FREEBIND: on the VRRP backup the VIP is not on any interface yet, and
//! the listener must already be there when it arrives.

use std::net::{SocketAddr, SocketAddrV4, TcpListener};

use anyhow::{Context, Result};
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel queues before `accept`.
const BACKLOG: i32 = 128;

/// A non-blocking TCP listener on `address`, which need not be local yet.
pub fn bind_freebind(address: SocketAddrV4) -> Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
        .context("creating a TCP socket")?;
    socket
        .set_reuse_address(true)
        .context("setting SO_REUSEADDR")?;
    socket
        .set_freebind_v4(true)
        .context("setting IP_FREEBIND")?;
    socket
        .bind(&SocketAddr::V4(address).into())
        .with_context(|| format!("binding {address} (is another program listening there?)"))?;
    socket
        .listen(BACKLOG)
        .with_context(|| format!("listening on {address}"))?;
    socket
        .set_nonblocking(true)
        .context("making the listener non-blocking")?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_an_address_this_host_does_not_have() {
        // 203.0.113.0/24 is a documentation range: no interface here has it.
        let address: SocketAddrV4 = "203.0.113.250:0".parse().unwrap();
        let listener = bind_freebind(address).expect("IP_FREEBIND lets it bind");
        let bound = listener.local_addr().unwrap();
        assert_eq!(bound.ip(), std::net::IpAddr::V4(*address.ip()));
        assert_ne!(bound.port(), 0);
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_address() {
        let first = bind_freebind("127.0.0.1:0".parse().unwrap()).unwrap();
        let SocketAddr::V4(taken) = first.local_addr().unwrap() else {
            unreachable!()
        };
        // SO_REUSEADDR does not allow two listeners on one port.
        let err = bind_freebind(taken).unwrap_err();
        assert!(format!("{err:#}").contains(&taken.to_string()), "{err:#}");
    }
}
