//! Readiness of many sockets at once (poll(2)), for a single thread serving every client of
//! the proxy, and a socket's drop counter read on demand.

use std::io;
use std::net::UdpSocket;
use std::time::Duration;

/// A set of sockets waited on together. Indices are the order of [`push`](Self::push).
#[derive(Debug, Default)]
pub struct PollSet {
    #[cfg(unix)]
    fds: Vec<libc::pollfd>,
    #[cfg(not(unix))]
    count: usize,
}

impl PollSet {
    pub fn new() -> Self {
        PollSet::default()
    }

    /// Empties the set (keeps its capacity).
    pub fn clear(&mut self) {
        #[cfg(unix)]
        self.fds.clear();
        #[cfg(not(unix))]
        {
            self.count = 0;
        }
    }

    /// Adds a socket to wait on for reading; returns its index. The socket must outlive every
    /// [`wait`](Self::wait) until the next [`clear`](Self::clear).
    pub fn push(&mut self, sock: &UdpSocket) -> usize {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            self.fds.push(libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
            self.fds.len() - 1
        }
        #[cfg(not(unix))]
        {
            let _ = sock;
            self.count += 1;
            self.count - 1
        }
    }

    pub fn len(&self) -> usize {
        #[cfg(unix)]
        {
            self.fds.len()
        }
        #[cfg(not(unix))]
        {
            self.count
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least one socket is readable (or has a pending error, which a read then
    /// returns at once) or `timeout` passes. Returns how many are ready; EINTR counts as none.
    /// Elsewhere than Unix every socket is reported ready after a short nap.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        #[cfg(unix)]
        {
            // Rounded up: a 0.3 ms deadline must not become a busy 0 ms poll.
            let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int;
            // SAFETY: `fds` is a live, exclusively borrowed array of `fds.len()` pollfd
            // structs; the kernel writes only their `revents` fields.
            let rc =
                unsafe { libc::poll(self.fds.as_mut_ptr(), self.fds.len() as libc::nfds_t, ms) };
            if rc >= 0 {
                return Ok(rc as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                for p in &mut self.fds {
                    p.revents = 0;
                }
                return Ok(0);
            }
            Err(e)
        }
        #[cfg(not(unix))]
        {
            std::thread::sleep(timeout.min(Duration::from_millis(1)));
            Ok(self.count)
        }
    }

    /// Socket `i` can be read without blocking (data, or an error to collect) after the last
    /// [`wait`](Self::wait).
    pub fn is_ready(&self, i: usize) -> bool {
        #[cfg(unix)]
        {
            self.fds
                .get(i)
                .is_some_and(|p| p.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0)
        }
        #[cfg(not(unix))]
        {
            i < self.count
        }
    }
}

/// The socket's cumulative count of datagrams the kernel dropped because its receive buffer
/// was full (what SO_RXQ_OVFL reports), read now (SO_MEMINFO, Linux ≥ 4.6). For a socket
/// about to be closed: the count starts at zero when the socket is created.
pub fn socket_drops(sock: &UdpSocket) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        super::sys::socket_drops(sock.as_raw_fd()).map(u64::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = sock;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "reading the socket drop counter needs Linux",
        ))
    }
}

/// Waits until `sock` is readable (or has an error to collect) or `timeout` passes, with
/// nanosecond resolution (ppoll): the reliable sender's wait for an ACK or its next deadline,
/// where poll(2)'s millisecond would make every timer up to a millisecond late. Returns
/// whether the socket is ready; EINTR counts as not ready.
pub fn wait_readable(sock: &UdpSocket, timeout: Duration) -> io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut fd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: one live, exclusively borrowed pollfd; the timespec outlives the call; a
        // null signal mask leaves the thread's mask unchanged.
        let rc = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
        if rc >= 0 {
            return Ok(rc > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        Err(e)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut set = PollSet::new();
        set.push(sock);
        set.wait(timeout).map(|n| n > 0)
    }
}

/// The process has no file descriptor left (EMFILE), or the system none (ENFILE).
pub fn is_out_of_fds(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

#[cfg(all(test, unix))]
mod tests {
    #[test]
    fn wait_readable_sees_a_datagram_and_times_out_without_one() {
        use std::net::UdpSocket;
        use std::time::Duration;
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!super::wait_readable(&a, Duration::from_micros(200)).unwrap());
        b.send_to(b"x", a.local_addr().unwrap()).unwrap();
        // Bounded: the datagram is on loopback; the wait returns as soon as it is queued.
        assert!(super::wait_readable(&a, Duration::from_secs(5)).unwrap());
    }

    use super::*;

    #[test]
    fn only_the_socket_with_a_datagram_is_ready() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut set = PollSet::new();
        assert_eq!(set.push(&a), 0);
        assert_eq!(set.push(&b), 1);
        assert_eq!(set.wait(Duration::ZERO).unwrap(), 0);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        // Bounded: the datagram is on loopback, ready within the 10 s a stalled machine needs.
        assert_eq!(set.wait(Duration::from_secs(10)).unwrap(), 1);
        assert!(!set.is_ready(0));
        assert!(set.is_ready(1));
        assert!(!set.is_ready(2), "out of range is never ready");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_new_socket_has_dropped_nothing() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(socket_drops(&a).unwrap(), 0);
    }

    #[test]
    fn emfile_is_out_of_fds_and_eagain_is_not() {
        assert!(is_out_of_fds(&io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(is_out_of_fds(&io::Error::from_raw_os_error(libc::ENFILE)));
        assert!(!is_out_of_fds(&io::Error::from_raw_os_error(libc::EAGAIN)));
    }
}
