//! Loading the XDP object with every map pinned under the node's directory,
//! and attaching it: fresh (native mode unless generic is asked for, the link
//! pinned so the program outlives the agent) or by adoption (a new program
//! hot-swapped into the link an earlier agent pinned, without a gap).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader};
use lb_common::map_names;

use super::limits::MapSizes;
use super::pins::PinDir;

/// The XDP program's name in the object.
pub const PROGRAM: &str = "lb";

/// How to attach. Native is the default: the kernel's "default" silently
/// lands in generic mode where the driver has no XDP, which is slow and
/// breaks XDP_TX on veth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    #[default]
    Native,
    Generic,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }

    fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// How the program got onto the interface.
#[derive(Debug)]
pub enum Attachment {
    /// Newly attached; the pinned link (its fd closes with it, the pin stays).
    Fresh(PinnedLink),
    /// Swapped into an earlier agent's pinned link (the program owns it now).
    Adopted,
}

/// Loads the object: every map of [`map_names::ALL`] pinned in `pins` (reused
/// when already pinned), sized from `limits`.
pub fn load(object: &[u8], pins: &PinDir, limits: &MapSizes) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    for name in map_names::ALL {
        loader.map_pin_path(name, pins.map(name));
    }
    loader.map_max_entries(lb_common::map_names::HOP_CACHE, limits.max_backends);
    for (name, size) in limits.map_sizes() {
        loader.map_max_entries(name, size);
    }
    loader.load(object).with_context(|| {
        format!(
            "loading the XDP object with its maps pinned in {}",
            pins.path().display()
        )
    })
}

/// Loads the program into the kernel and attaches it to `iface`, adopting the
/// pinned link if there is one.
pub fn attach(ebpf: &mut Ebpf, pins: &PinDir, iface: &str, mode: AttachMode) -> Result<Attachment> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("the XDP object has no program named {PROGRAM:?}"))?
        .try_into()
        .with_context(|| format!("program {PROGRAM:?} is not an XDP program"))?;
    load_program(prog).with_context(|| {
        format!("loading the XDP program {PROGRAM:?} (the verifier's log says why)")
    })?;

    let link_path = pins.link();
    if link_path.exists() {
        match pinned_link_ifindex(&link_path)? {
            0 => {
                tracing::warn!(path = %link_path.display(), "the pinned XDP link lost its interface; attaching anew");
                std::fs::remove_file(&link_path).with_context(|| {
                    format!("removing the stale link pin {}", link_path.display())
                })?;
            }
            ifindex => {
                check_same_interface(ifindex, iface, &link_path)?;
                return adopt(prog, &link_path, iface);
            }
        }
    }
    attach_fresh(prog, &link_path, iface, mode)
}

/// Attaches the already loaded program to `iface` anew, replacing a link
/// pin whose device is gone: the device was re-created under the same name.
pub fn attach_again(
    ebpf: &mut Ebpf,
    pins: &PinDir,
    iface: &str,
    mode: AttachMode,
) -> Result<Attachment> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM)
        .with_context(|| format!("the XDP object has no program named {PROGRAM:?}"))?
        .try_into()
        .with_context(|| format!("program {PROGRAM:?} is not an XDP program"))?;
    let link_path = pins.link();
    if link_path.exists() {
        if pinned_link_ifindex(&link_path)? == if_index(iface)? {
            // Attached already (an earlier try got this far).
            return Ok(Attachment::Adopted);
        }
        std::fs::remove_file(&link_path)
            .with_context(|| format!("removing the stale link pin {}", link_path.display()))?;
    }
    attach_fresh(prog, &link_path, iface, mode)
}

fn attach_fresh(
    prog: &mut Xdp,
    link_path: &Path,
    iface: &str,
    mode: AttachMode,
) -> Result<Attachment> {
    let id = prog.attach(iface, mode.xdp_mode()).with_context(|| {
        let hint = match mode {
            AttachMode::Native => {
                " (if the driver has no native XDP, ask for generic mode in the config)"
            }
            AttachMode::Generic => "",
        };
        format!(
            "attaching the XDP program to {iface} in {} mode{hint}",
            mode.name()
        )
    })?;
    let link = prog
        .take_link(id)
        .context("taking ownership of the XDP link")?;
    let fd_link = FdLink::try_from(link).with_context(|| {
        format!("the kernel attached to {iface} without a bpf_link (netlink fallback), which cannot be pinned")
    })?;
    let pinned = fd_link
        .pin(link_path)
        .with_context(|| format!("pinning the XDP link at {}", link_path.display()))?;
    tracing::info!(iface, mode = mode.name(), pin = %link_path.display(), "attached in {} mode on {iface}", mode.name());
    Ok(Attachment::Fresh(pinned))
}

fn adopt(prog: &mut Xdp, link_path: &Path, iface: &str) -> Result<Attachment> {
    let pinned = PinnedLink::from_pin(link_path)
        .with_context(|| format!("opening the pinned XDP link at {}", link_path.display()))?;
    let link = XdpLink::try_from(FdLink::from(pinned))
        .with_context(|| format!("{} is not an XDP link", link_path.display()))?;
    prog.attach_to_link(link).with_context(|| {
        format!(
            "swapping the new program into the XDP link pinned at {}",
            link_path.display()
        )
    })?;
    tracing::info!(iface, pin = %link_path.display(), "adopted the existing XDP link on {iface} (program replaced in place)");
    Ok(Attachment::Adopted)
}

fn check_same_interface(ifindex: u32, iface: &str, link_path: &Path) -> Result<()> {
    let want = if_index(iface)?;
    if want != ifindex {
        bail!(
            "the XDP link pinned at {} is attached to {} (ifindex {ifindex}), the config names {iface}: \
             run `lbd stop --detach` first to move the data path to another interface",
            link_path.display(),
            if_name(ifindex).unwrap_or_else(|| "?".into()),
        );
    }
    Ok(())
}

pub fn if_index(iface: &str) -> Result<u32> {
    let c = CString::new(iface).with_context(|| format!("{iface:?} is not an interface name"))?;
    // SAFETY: c is NUL-terminated.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::last_os_error()).with_context(|| format!("no interface named {iface}")),
        i => Ok(i),
    }
}

fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `union bpf_attr` for BPF_OBJ_GET.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` for BPF_OBJ_GET_INFO_BY_FD.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The head of `struct bpf_link_info` for an XDP link: type, id, prog_id,
/// then the 8-aligned union whose `xdp` member starts with the ifindex.
#[repr(C)]
struct XdpLinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _align: u32,
    ifindex: u32,
    _rest: [u32; 27],
}

/// The interface a pinned XDP link is attached to (0 once its interface is
/// gone). aya's `LinkInfo` does not expose it, so this asks the kernel
/// directly: BPF_OBJ_GET on the pin, then BPF_OBJ_GET_INFO_BY_FD.
pub fn pinned_link_ifindex(path: &Path) -> Result<u32> {
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    let mut get = ObjGetAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: the attr outlives the call and names a NUL-terminated path.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &mut get,
            size_of::<ObjGetAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("opening the pinned link {}", path.display()));
    }
    // SAFETY: the kernel just handed us this descriptor.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: plain integers, valid zeroed.
    let mut info: XdpLinkInfo = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<XdpLinkInfo>() as u32,
        info: &mut info as *mut XdpLinkInfo as u64,
    };
    // SAFETY: attr and info outlive the call; info_len bounds the kernel's write.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr,
            size_of::<InfoAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("reading the link info of {}", path.display()));
    }
    if info.link_type != BPF_LINK_TYPE_XDP {
        bail!(
            "{} is a bpf link of type {}, not XDP",
            path.display(),
            info.link_type
        );
    }
    tracing::debug!(
        id = info.id,
        prog_id = info.prog_id,
        ifindex = info.ifindex,
        "pinned XDP link"
    );
    Ok(info.ifindex)
}

/// `Xdp::load`, retried when the kernel answers EAGAIN: the verifier gives up
/// with EAGAIN when a signal arrives while it works (a child exiting, a
/// reload request), and checking this program takes a few hundred ms.
pub fn load_program(prog: &mut Xdp) -> Result<(), aya::programs::ProgramError> {
    const TRIES: u32 = 5;
    let mut attempt = 1;
    loop {
        match prog.load() {
            Err(e) if attempt < TRIES && is_eagain(&e) => {
                tracing::debug!(
                    attempt,
                    "the verifier was interrupted (EAGAIN); loading again"
                );
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn is_eagain(e: &aya::programs::ProgramError) -> bool {
    match e {
        aya::programs::ProgramError::LoadError { io_error, .. } => {
            io_error.raw_os_error() == Some(libc::EAGAIN)
        }
        _ => false,
    }
}
