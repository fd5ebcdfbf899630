//! What aya 0.14 does not expose for cgroup links: opening a pinned link and pointing
//! it at another program.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

/// The `BPF_OBJ_*` member of `union bpf_attr`, its padding spelled out (the kernel
/// refuses an attr whose bytes past the command's last field are not zero).
#[repr(C)]
struct ObjGet {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// The `link_update` member of `union bpf_attr`.
#[repr(C)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in pin path"))?;
    let attr = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `attr` is an initialised bpf_attr prefix of the size passed, and the
    // path it points to outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &raw const attr,
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Atomically replaces the program of the link pinned at `link` with `program`.
pub(super) fn link_update(link: &Path, program: BorrowedFd<'_>) -> io::Result<()> {
    let link = obj_get(link)?;
    let fd = |fd: i32| u32::try_from(fd).map_err(|_| io::Error::other("negative fd"));
    let attr = LinkUpdate {
        link_fd: fd(link.as_raw_fd())?,
        new_prog_fd: fd(program.as_raw_fd())?,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: as in `obj_get`; both descriptors stay open for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &raw const attr,
            std::mem::size_of::<LinkUpdate>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
