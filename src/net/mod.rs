//! The socket layer: UDP socket set-up (buffers, kernel timestamps, drop counter, GRO),
//! batched send/receive, CPU pinning and host UDP counters. All `unsafe` and libc code of
//! udplab lives under this module (Linux first, a plain portable fallback elsewhere).

pub mod batch;
pub mod cpu;
pub mod marking;
pub mod multicast;
pub mod poll;
pub mod snmp;
pub mod socket;
pub mod sockopts;
#[cfg(target_os = "linux")]
mod sys;

pub use batch::{
    RecvBatch, RecvMeta, SendMode, auto_send_mode, gso_supported, is_eagain, is_enobufs,
    is_gso_refused, max_gso_segments, send_batch, send_each,
};
pub use cpu::{parse_cpu_list, pin_current_thread, tighten_timer_slack};
pub use poll::{PollSet, is_out_of_fds, socket_drops, wait_readable};
pub use snmp::{UdpSnmp, udp_snmp, udp6_snmp};
pub use socket::{
    BoundSocket, NetError, SocketOptions, bind, bind_listener, bind_shared, is_local_destination,
    rcvbuf_limit, resolve, shown_addr, unspecified_for,
};
