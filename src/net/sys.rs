//! Thin, checked wrappers over the Linux socket calls socket2 does not cover (integer socket
//! options); the rest of `net` calls these instead of repeating `unsafe` blocks.

use std::io;
use std::mem;
use std::os::fd::RawFd;

/// Sets an `int`-valued socket option.
pub(crate) fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int for the duration of the call and the length passed is its
    // exact size; the kernel only reads from the pointer. An invalid fd is reported as EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast::<libc::c_void>(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads an `int`-valued socket option.
pub(crate) fn getsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` tells the kernel the buffer holds one
    // c_int, so it never writes past it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&raw mut value).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The socket's cumulative drop counter (`sk_drops`, the value SO_RXQ_OVFL reports), read now
/// through SO_MEMINFO (Linux ≥ 4.6). A u32 that wraps, like the SO_RXQ_OVFL value.
pub(crate) fn socket_drops(fd: RawFd) -> io::Result<u32> {
    let drops_index = libc::SK_MEMINFO_DROPS as usize;
    // The drop counter is the last of the kernel's SK_MEMINFO_VARS entries.
    let mut meminfo = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = mem::size_of_val(&meminfo) as libc::socklen_t;
    // SAFETY: `meminfo` and `len` are live locals and `len` is the array's size in bytes, so
    // the kernel writes at most that many bytes into it.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            meminfo.as_mut_ptr().cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < (drops_index + 1) * mem::size_of::<u32>() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_MEMINFO has no drop counter on this kernel",
        ));
    }
    Ok(meminfo[drops_index])
}
