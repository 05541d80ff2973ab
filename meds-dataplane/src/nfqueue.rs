//! A thin NFQUEUE layer over a raw `NETLINK_NETFILTER` socket (libc only).
//!
//! [`NfQueue::open`] binds one queue and configures it, checking the kernel's acknowledgement
//! of every step (a failed bind — e.g. the queue is owned by another process — is an error,
//! never ignored). [`NfQueue::recv`] reads one datagram into a caller-owned buffer;
//! [`packets`] walks the queue messages in it, bounds-checking every netlink header and
//! attribute (the input is treated as hostile: it never panics, never allocates and never
//! reads past a checked length). [`NfQueue::verdict`] answers one packet from a stack buffer.
//!
//! Written from the kernel UAPI headers (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`,
//! `linux/netfilter/nfnetlink_queue.h`). The message builder and the walker are separate from
//! the socket so that batching (`recvmmsg` + `NFQNL_MSG_VERDICT_BATCH`) can be added on top
//! without touching the decoding.
//!
//! Packets that the kernel queues to us *while* the queue is still being configured (between
//! the bind and the last acknowledgement) are answered with `NF_REPEAT`: the kernel runs the
//! same hook again, which queues them again under the final configuration, so they are
//! decided normally by the worker instead of being accepted, dropped or left stuck.
//!
//! This module knows nothing about rules or policy; it must not log or allocate per packet.

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::chain::Verdict;

/// Kernel UAPI constants, named as in the headers.
mod uapi {
    // linux/netlink.h
    pub const NLMSG_HDRLEN: usize = 16;
    pub const NLA_HDRLEN: usize = 4;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLM_F_REQUEST: u16 = 1;
    pub const NLM_F_ACK: u16 = 4;
    pub const NLA_TYPE_MASK: u16 = 0x3fff;

    // linux/netfilter/nfnetlink.h
    pub const NFGENMSG_LEN: usize = 4;
    pub const NFNETLINK_V0: u8 = 0;
    pub const NFNL_SUBSYS_QUEUE: u16 = 3;

    // linux/netfilter/nfnetlink_queue.h
    pub const NFQNL_MSG_PACKET: u16 = 0;
    pub const NFQNL_MSG_VERDICT: u16 = 1;
    pub const NFQNL_MSG_CONFIG: u16 = 2;

    pub const NFQA_PACKET_HDR: u16 = 1;
    pub const NFQA_VERDICT_HDR: u16 = 2;
    pub const NFQA_MARK: u16 = 3;
    pub const NFQA_PAYLOAD: u16 = 10;

    pub const NFQA_CFG_CMD: u16 = 1;
    pub const NFQA_CFG_PARAMS: u16 = 2;
    pub const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
    pub const NFQA_CFG_MASK: u16 = 4;
    pub const NFQA_CFG_FLAGS: u16 = 5;

    pub const NFQNL_CFG_CMD_BIND: u8 = 1;
    pub const NFQNL_COPY_PACKET: u8 = 2;

    pub const NFQA_CFG_F_FAIL_OPEN: u32 = 1 << 0;
    pub const NFQA_CFG_F_GSO: u32 = 1 << 2;

    /// `0xffff - NLA_HDRLEN`: the largest copy range the kernel honours.
    pub const NFQNL_MAX_COPY_RANGE: u32 = 0xffff - 4;

    // linux/netfilter.h
    pub const NF_DROP: u32 = 0;
    pub const NF_ACCEPT: u32 = 1;
    pub const NF_REPEAT: u32 = 4;

    /// `(NFNL_SUBSYS_QUEUE << 8) | msg`.
    pub const fn queue_msg_type(msg: u16) -> u16 {
        (NFNL_SUBSYS_QUEUE << 8) | msg
    }
}

use uapi::*;

/// The largest copy range the kernel honours (`0xffff - NLA_HDRLEN`).
pub const MAX_COPY_RANGE: u32 = NFQNL_MAX_COPY_RANGE;

/// Receive timeout, so a blocked receive returns regularly and the worker can see `stop`.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// How long `open` waits for the kernel to acknowledge one configuration step.
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// How many datagrams `open` reads at most while waiting for one acknowledgement.
const ACK_MAX_DATAGRAMS: usize = 1024;
/// Bytes of headroom for netlink and attribute headers around a copied payload.
const MESSAGE_HEADROOM: usize = 4096;
/// Smallest receive buffer [`NfQueue::recv_buffer_len`] recommends.
const MIN_RECV_BUFFER: usize = 64 * 1024;
/// Size of the stack buffer a verdict message is built in.
const VERDICT_MSG_CAPACITY: usize = 64;
/// Size of the stack buffer a configuration message is built in.
const CONFIG_MSG_CAPACITY: usize = 64;

/// How one queue is bound and configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// The `--queue-num` of the iptables `NFQUEUE` rule.
    pub queue_num: u16,
    /// Packets the kernel holds for us before it drops (or, with `fail_open`, accepts) new ones.
    /// Must be at least 1.
    pub max_len: u32,
    /// Bytes of each packet copied to us. 0 or anything above [`MAX_COPY_RANGE`] means
    /// [`MAX_COPY_RANGE`] (the kernel's rule).
    pub copy_range: u32,
    /// Socket receive buffer to request (SO_RCVBUFFORCE, else SO_RCVBUF). 0 keeps the default.
    pub rcvbuf_bytes: usize,
    /// Accept packets instead of dropping them when the queue is full (NFQA_CFG_F_FAIL_OPEN).
    pub fail_open: bool,
}

/// A failure of one NFQUEUE step. Every message names the step; kernel and socket errors are
/// included in the message (and available through [`NfQueueError::io_error`]).
#[derive(Debug, thiserror::Error)]
pub enum NfQueueError {
    #[error("invalid queue configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("open netlink socket: {error}")]
    Socket { error: io::Error },
    #[error("bind netlink socket: {error}")]
    BindSocket { error: io::Error },
    #[error("set socket option {option} for queue {queue}: {error}")]
    SocketOption {
        queue: u16,
        option: &'static str,
        error: io::Error,
    },
    #[error("bind queue {queue}: {error}{hint}", hint = bind_hint(.error))]
    BindQueue { queue: u16, error: io::Error },
    #[error("set copy mode of queue {queue} (copy range {copy_range}): {error}")]
    CopyMode {
        queue: u16,
        copy_range: u32,
        error: io::Error,
    },
    #[error("set max length of queue {queue} to {max_len}: {error}")]
    MaxLen {
        queue: u16,
        max_len: u32,
        error: io::Error,
    },
    #[error("set flags of queue {queue}: {error}")]
    Flags { queue: u16, error: io::Error },
    #[error("receive from queue {queue}: {error}")]
    Recv { queue: u16, error: io::Error },
    #[error("send verdict for packet {packet_id} on queue {queue}: {error}")]
    Verdict {
        queue: u16,
        packet_id: u32,
        error: io::Error,
    },
    /// The kernel answered one of our requests (after `open`: a verdict) with an error.
    #[error("kernel rejected request {seq}: {error}")]
    Kernel { seq: u32, error: io::Error },
    /// A datagram that did not come from the kernel (netlink port id != 0); ignored.
    #[error("ignored a netlink message from port {portid} (not the kernel)")]
    ForeignSender { portid: u32 },
    /// A queue message that could not be decoded. `packet_id` is set when the packet header
    /// could still be read, so the packet can be given a verdict.
    #[error("malformed queue message{}: {what}", packet_id.map(|id| format!(" for packet {id}")).unwrap_or_default())]
    Malformed {
        packet_id: Option<u32>,
        what: &'static str,
    },
}

fn bind_hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(libc::EPERM) => {
            " (another process owns this queue number, or CAP_NET_ADMIN is missing)"
        }
        Some(libc::EBUSY) => " (this socket already bound the queue)",
        _ => "",
    }
}

impl NfQueueError {
    /// The operating-system error behind this failure, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            NfQueueError::Socket { error }
            | NfQueueError::BindSocket { error }
            | NfQueueError::SocketOption { error, .. }
            | NfQueueError::BindQueue { error, .. }
            | NfQueueError::CopyMode { error, .. }
            | NfQueueError::MaxLen { error, .. }
            | NfQueueError::Flags { error, .. }
            | NfQueueError::Recv { error, .. }
            | NfQueueError::Verdict { error, .. }
            | NfQueueError::Kernel { error, .. } => Some(error),
            NfQueueError::InvalidConfig(_)
            | NfQueueError::ForeignSender { .. }
            | NfQueueError::Malformed { .. } => None,
        }
    }

    /// The errno behind this failure, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.io_error().and_then(io::Error::raw_os_error)
    }
}

/// One bound NFQUEUE. Owns its netlink socket; dropping it closes the socket, which makes the
/// kernel unbind the queue (packets still queued are then dropped by the kernel).
#[derive(Debug)]
pub struct NfQueue {
    fd: OwnedFd,
    queue_num: u16,
    copy_range: u32,
    effective_rcvbuf: usize,
    rcvbuf_forced: bool,
    seq: u32,
}

/// One packet handed to user space, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueuedPacket<'b> {
    /// The id to answer with a verdict.
    pub packet_id: u32,
    /// Link-layer protocol (EtherType) in host order, e.g. 0x0800 for IPv4.
    pub hw_protocol: u16,
    /// The packet's netfilter mark, when the kernel sent one (it does when non-zero).
    pub mark: Option<u32>,
    /// The IP packet, cut at the copy range. Empty when the kernel sent no payload.
    pub payload: &'b [u8],
}

impl NfQueue {
    /// Open a netlink socket, bind `cfg.queue_num` and configure it. Every configuration step
    /// waits for the kernel's acknowledgement and fails with the step's error.
    pub fn open(cfg: &QueueConfig) -> Result<NfQueue, NfQueueError> {
        if cfg.max_len == 0 {
            return Err(NfQueueError::InvalidConfig(
                "queue max length must be at least 1",
            ));
        }
        let queue = cfg.queue_num;
        let copy_range = if cfg.copy_range == 0 || cfg.copy_range > MAX_COPY_RANGE {
            MAX_COPY_RANGE
        } else {
            cfg.copy_range
        };

        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(NfQueueError::Socket {
                error: io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };

        let local = kernel_address(); // port id 0: the kernel assigns ours
        // SAFETY: `local` is a valid sockaddr_nl and the length passed is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const local).cast::<libc::sockaddr>(),
                sockaddr_nl_len(),
            )
        };
        if rc < 0 {
            return Err(NfQueueError::BindSocket {
                error: io::Error::last_os_error(),
            });
        }

        let option_error = |option: &'static str, error: io::Error| NfQueueError::SocketOption {
            queue,
            option,
            error,
        };
        let mut rcvbuf_forced = false;
        if cfg.rcvbuf_bytes > 0 {
            let want = libc::c_int::try_from(cfg.rcvbuf_bytes).unwrap_or(libc::c_int::MAX);
            match set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, want) {
                Ok(()) => rcvbuf_forced = true,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    set_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, want)
                        .map_err(|e| option_error("SO_RCVBUF", e))?;
                }
                Err(e) => return Err(option_error("SO_RCVBUFFORCE", e)),
            }
        }
        let effective_rcvbuf = get_int_option(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map_err(|e| option_error("SO_RCVBUF (read back)", e))?;
        set_int_option(&fd, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1)
            .map_err(|e| option_error("NETLINK_NO_ENOBUFS", e))?;
        set_recv_timeout(&fd, RECV_TIMEOUT).map_err(|e| option_error("SO_RCVTIMEO", e))?;

        let mut nfq = NfQueue {
            fd,
            queue_num: queue,
            copy_range,
            effective_rcvbuf: usize::try_from(effective_rcvbuf).unwrap_or(0),
            rcvbuf_forced,
            seq: 0,
        };
        // Scratch space for acknowledgements (and any packet queued meanwhile); freed on return.
        let mut scratch = vec![0u8; nfq.recv_buffer_len()];

        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]);
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::BindQueue { queue, error })?;

        let mut params = [0u8; 5];
        params[..4].copy_from_slice(&copy_range.to_be_bytes());
        params[4] = NFQNL_COPY_PACKET;
        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_PARAMS, &params);
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::CopyMode {
                queue,
                copy_range,
                error,
            })?;

        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_QUEUE_MAXLEN, &cfg.max_len.to_be_bytes());
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::MaxLen {
                queue,
                max_len: cfg.max_len,
                error,
            })?;

        // Set fail-open explicitly either way, and keep GSO off (the kernel segments GSO
        // packets before queueing them, so every payload is one IP packet).
        let flags = if cfg.fail_open {
            NFQA_CFG_F_FAIL_OPEN
        } else {
            0
        };
        let mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        let mut msg = nfq.config_message();
        msg.attr(NFQA_CFG_FLAGS, &flags.to_be_bytes());
        msg.attr(NFQA_CFG_MASK, &mask.to_be_bytes());
        nfq.request(&mut msg, &mut scratch)
            .map_err(|error| NfQueueError::Flags { queue, error })?;

        Ok(nfq)
    }

    /// The socket receive buffer as the kernel reports it (SO_RCVBUF; the kernel doubles the
    /// requested size to account for its bookkeeping).
    pub fn effective_rcvbuf(&self) -> usize {
        self.effective_rcvbuf
    }

    /// False when SO_RCVBUFFORCE was refused (no CAP_NET_ADMIN) and SO_RCVBUF, capped by
    /// `net.core.rmem_max`, was used instead — or when no size was requested.
    pub fn rcvbuf_forced(&self) -> bool {
        self.rcvbuf_forced
    }

    pub fn queue_num(&self) -> u16 {
        self.queue_num
    }

    /// The copy range in effect (0 and oversized requests resolved to [`MAX_COPY_RANGE`]).
    pub fn copy_range(&self) -> u32 {
        self.copy_range
    }

    /// A receive buffer size that holds any message of this queue: the copy range plus
    /// headroom for the headers, and at least 64 KiB.
    pub fn recv_buffer_len(&self) -> usize {
        let copy = usize::try_from(self.copy_range).unwrap_or(usize::MAX);
        copy.saturating_add(MESSAGE_HEADROOM).max(MIN_RECV_BUFFER)
    }

    /// Receive one datagram into `buf` and return its length (walk it with [`packets`]).
    ///
    /// `Ok(None)` when the receive timed out (about 200 ms) or was interrupted. A datagram
    /// larger than `buf` is cut; [`packets`] then reports the cut message as
    /// [`NfQueueError::Malformed`] with its packet id when that is readable. Errors (including
    /// ENOBUFS, should the kernel report one) are per-call: the queue stays usable.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, NfQueueError> {
        self.recv_raw(buf).map_err(|error| match error {
            RecvError::Io(error) => NfQueueError::Recv {
                queue: self.queue_num,
                error,
            },
            RecvError::Foreign(portid) => NfQueueError::ForeignSender { portid },
        })
    }

    /// Tell the kernel what to do with one queued packet, optionally setting its mark.
    /// Builds the message on the stack; does not allocate. A verdict the kernel rejects (for
    /// example an unknown packet id) comes back later as [`NfQueueError::Kernel`] from
    /// [`packets`].
    pub fn verdict(
        &mut self,
        packet_id: u32,
        verdict: Verdict,
        mark: Option<u32>,
    ) -> Result<(), NfQueueError> {
        let raw = match verdict {
            Verdict::Accept => NF_ACCEPT,
            Verdict::Drop => NF_DROP,
        };
        self.send_verdict(packet_id, raw, mark)
    }

    /// Give one packet back to the hook that queued it (`NF_REPEAT`): the kernel evaluates the
    /// hook again, so a packet that still matches the `NFQUEUE` rule is queued again with a
    /// new id.
    pub fn repeat(&mut self, packet_id: u32) -> Result<(), NfQueueError> {
        self.send_verdict(packet_id, NF_REPEAT, None)
    }

    fn send_verdict(
        &self,
        packet_id: u32,
        raw: u32,
        mark: Option<u32>,
    ) -> Result<(), NfQueueError> {
        let mut msg = verdict_message(self.queue_num, packet_id, raw, mark);
        let sent = match msg.bytes() {
            Some(bytes) => self.send(bytes),
            None => Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
        };
        sent.map_err(|error| NfQueueError::Verdict {
            queue: self.queue_num,
            packet_id,
            error,
        })
    }

    fn config_message(&mut self) -> MessageBuf<CONFIG_MSG_CAPACITY> {
        self.seq = self.seq.wrapping_add(1);
        MessageBuf::new(
            queue_msg_type(NFQNL_MSG_CONFIG),
            NLM_F_REQUEST | NLM_F_ACK,
            self.seq,
            self.queue_num,
        )
    }

    /// Send a configuration message and wait for its acknowledgement.
    fn request(
        &self,
        msg: &mut MessageBuf<CONFIG_MSG_CAPACITY>,
        scratch: &mut [u8],
    ) -> io::Result<()> {
        let seq = msg.seq();
        let bytes = msg
            .bytes()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        self.send(bytes)?;
        let deadline = Instant::now() + ACK_TIMEOUT;
        for _ in 0..ACK_MAX_DATAGRAMS {
            if Instant::now() >= deadline {
                break;
            }
            let len = match self.recv_raw(scratch) {
                Ok(Some(len)) => len,
                Ok(None) | Err(RecvError::Foreign(_)) => continue,
                Err(RecvError::Io(e)) => return Err(e),
            };
            let datagram = scratch.get(..len).unwrap_or_default();
            for message in Messages::new(datagram).flatten() {
                match message.msg_type {
                    NLMSG_ERROR if message.seq == seq => {
                        let errno = ack_errno(message.body)
                            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADMSG))?;
                        return if errno == 0 {
                            Ok(())
                        } else {
                            Err(io::Error::from_raw_os_error(errno))
                        };
                    }
                    t if t == queue_msg_type(NFQNL_MSG_PACKET) => {
                        // Queued before the configuration is complete: send it round again.
                        if let Some(id) = packet_header_id(message.body) {
                            let _ = self.send_verdict(id, NF_REPEAT, None);
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the kernel did not acknowledge the request",
        ))
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        let kernel = kernel_address();
        // SAFETY: `bytes` is a valid readable buffer of the given length, and `kernel` a valid
        // sockaddr_nl of the given length.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&raw const kernel).cast::<libc::sockaddr>(),
                sockaddr_nl_len(),
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if usize::try_from(sent).ok() != Some(bytes.len()) {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "netlink message sent partially",
            ));
        }
        Ok(())
    }

    fn recv_raw(&self, buf: &mut [u8]) -> Result<Option<usize>, RecvError> {
        // SAFETY: all-zero bytes are a valid sockaddr_nl.
        let mut from: libc::sockaddr_nl = unsafe { mem::zeroed() };
        let mut from_len = sockaddr_nl_len();
        // SAFETY: `buf` is a valid writable buffer of `buf.len()` bytes; `from` and `from_len`
        // describe a valid sockaddr_nl. MSG_TRUNC makes the call return the full datagram
        // length but the kernel still writes at most `buf.len()` bytes.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
                (&raw mut from).cast::<libc::sockaddr>(),
                &mut from_len,
            )
        };
        if n < 0 {
            let error = io::Error::last_os_error();
            return match error.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                _ => Err(RecvError::Io(error)),
            };
        }
        if from.nl_pid != 0 {
            return Err(RecvError::Foreign(from.nl_pid));
        }
        let n = usize::try_from(n).unwrap_or(0);
        Ok(Some(n.min(buf.len())))
    }
}

impl AsFd for NfQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

enum RecvError {
    Io(io::Error),
    Foreign(u32),
}

fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: all-zero bytes are a valid sockaddr_nl (port 0 = kernel, no groups).
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

fn sockaddr_nl_len() -> libc::socklen_t {
    // The struct is 12 bytes; the cast cannot truncate.
    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t
}

fn set_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn get_int_option(fd: &OwnedFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable c_int and `len` holds its size.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(value)
    }
}

fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros()),
    };
    // SAFETY: `tv` is a valid timeval and the length passed is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Building messages (fixed-size stack buffers, no allocation).

/// A netlink message with an `nfgenmsg` header, built in a fixed-size buffer. Writing past the
/// capacity marks the message as overflowed instead of panicking; [`MessageBuf::bytes`] then
/// returns `None`.
#[derive(Debug, Clone)]
struct MessageBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflow: bool,
}

impl<const N: usize> MessageBuf<N> {
    fn new(msg_type: u16, flags: u16, seq: u32, queue_num: u16) -> MessageBuf<N> {
        let mut m = MessageBuf {
            buf: [0; N],
            len: 0,
            overflow: false,
        };
        m.put(&0u32.to_ne_bytes()); // nlmsg_len, set by `bytes`
        m.put(&msg_type.to_ne_bytes());
        m.put(&flags.to_ne_bytes());
        m.put(&seq.to_ne_bytes());
        m.put(&0u32.to_ne_bytes()); // nlmsg_pid: 0, the kernel fills in ours
        // nfgenmsg: family AF_UNSPEC, version, res_id = queue number (big endian)
        m.put(&[libc::AF_UNSPEC as u8, NFNETLINK_V0]);
        m.put(&queue_num.to_be_bytes());
        m
    }

    fn put(&mut self, bytes: &[u8]) {
        let Some(end) = self.len.checked_add(bytes.len()) else {
            self.overflow = true;
            return;
        };
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len = end;
            }
            None => self.overflow = true,
        }
    }

    /// Append one attribute, padded to 4 bytes.
    fn attr(&mut self, attr_type: u16, payload: &[u8]) {
        let Ok(len) = u16::try_from(NLA_HDRLEN + payload.len()) else {
            self.overflow = true;
            return;
        };
        self.put(&len.to_ne_bytes());
        self.put(&attr_type.to_ne_bytes());
        self.put(payload);
        let padding = align4(usize::from(len)) - usize::from(len);
        self.put(&[0u8; 3][..padding]);
    }

    fn seq(&self) -> u32 {
        read_u32_ne(&self.buf, 8).unwrap_or(0)
    }

    /// The finished message, or `None` if it did not fit.
    fn bytes(&mut self) -> Option<&[u8]> {
        if self.overflow {
            return None;
        }
        let len = u32::try_from(self.len).ok()?;
        self.buf.get_mut(0..4)?.copy_from_slice(&len.to_ne_bytes());
        self.buf.get(..self.len)
    }
}

fn verdict_message(
    queue_num: u16,
    packet_id: u32,
    raw_verdict: u32,
    mark: Option<u32>,
) -> MessageBuf<VERDICT_MSG_CAPACITY> {
    let mut msg = MessageBuf::new(
        queue_msg_type(NFQNL_MSG_VERDICT),
        NLM_F_REQUEST,
        0,
        queue_num,
    );
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&raw_verdict.to_be_bytes());
    hdr[4..].copy_from_slice(&packet_id.to_be_bytes());
    msg.attr(NFQA_VERDICT_HDR, &hdr);
    if let Some(mark) = mark {
        msg.attr(NFQA_MARK, &mark.to_be_bytes());
    }
    msg
}

// ---------------------------------------------------------------------------------------------
// Walking received datagrams (hostile-ish input: total, bounds-checked, no allocation).

fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn read_u16_ne(buf: &[u8], at: usize) -> Option<u16> {
    read_array(buf, at).map(u16::from_ne_bytes)
}

fn read_u32_ne(buf: &[u8], at: usize) -> Option<u32> {
    read_array(buf, at).map(u32::from_ne_bytes)
}

fn read_u16_be(buf: &[u8], at: usize) -> Option<u16> {
    read_array(buf, at).map(u16::from_be_bytes)
}

fn read_u32_be(buf: &[u8], at: usize) -> Option<u32> {
    read_array(buf, at).map(u32::from_be_bytes)
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
struct RawMessage<'a> {
    msg_type: u16,
    seq: u32,
    /// Everything after the netlink header (cut short when `truncated`).
    body: &'a [u8],
    /// The header claimed more bytes than the datagram holds.
    truncated: bool,
}

/// Iterator over the netlink messages of one datagram. Stops after the first error.
struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Messages<'a> {
    fn new(buf: &'a [u8]) -> Messages<'a> {
        Messages {
            buf,
            offset: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<RawMessage<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let rest = match self.buf.get(self.offset..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => {
                self.done = true;
                return None;
            }
        };
        let header = (
            read_u32_ne(rest, 0),
            read_u16_ne(rest, 4),
            read_u32_ne(rest, 8),
        );
        let (Some(len), Some(msg_type), Some(seq)) = header else {
            self.done = true;
            return Some(Err("netlink header truncated"));
        };
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        if len < NLMSG_HDRLEN {
            self.done = true;
            return Some(Err("netlink message length below its header"));
        }
        let (body, truncated) = match rest.get(NLMSG_HDRLEN..len) {
            Some(body) => (body, false),
            None => {
                self.done = true;
                (rest.get(NLMSG_HDRLEN..).unwrap_or_default(), true)
            }
        };
        self.offset = self.offset.saturating_add(align4(len));
        Some(Ok(RawMessage {
            msg_type,
            seq,
            body,
            truncated,
        }))
    }
}

/// The errno of an `NLMSG_ERROR` body (0 for an acknowledgement), positive.
fn ack_errno(body: &[u8]) -> Option<i32> {
    let error = i32::from_ne_bytes(read_array(body, 0)?);
    Some(error.checked_neg().unwrap_or(i32::MAX))
}

/// The packet id of a queue message body, if its packet header attribute can be read.
fn packet_header_id(body: &[u8]) -> Option<u32> {
    match decode_packet(body) {
        Ok(packet) => Some(packet.packet_id),
        Err(NfQueueError::Malformed { packet_id, .. }) => packet_id,
        Err(_) => None,
    }
}

/// Decode the body (after the netlink header) of an `NFQNL_MSG_PACKET` message.
fn decode_packet(body: &[u8]) -> Result<QueuedPacket<'_>, NfQueueError> {
    let malformed =
        |packet_id: Option<u32>, what: &'static str| NfQueueError::Malformed { packet_id, what };
    let attrs = body
        .get(NFGENMSG_LEN..)
        .ok_or(malformed(None, "nfgenmsg header truncated"))?;
    let mut packet_id = None;
    let mut hw_protocol = 0;
    let mut mark = None;
    let mut payload: &[u8] = &[];
    let mut offset = 0usize;
    while offset < attrs.len() {
        let (Some(nla_len), Some(nla_type)) =
            (read_u16_ne(attrs, offset), read_u16_ne(attrs, offset + 2))
        else {
            return Err(malformed(packet_id, "attribute header truncated"));
        };
        let nla_len = usize::from(nla_len);
        if nla_len < NLA_HDRLEN {
            return Err(malformed(packet_id, "attribute length below its header"));
        }
        let Some(data) = attrs.get(offset + NLA_HDRLEN..offset + nla_len) else {
            return Err(malformed(packet_id, "attribute runs past the message"));
        };
        match nla_type & NLA_TYPE_MASK {
            NFQA_PACKET_HDR => {
                let (Some(id), Some(hw)) = (read_u32_be(data, 0), read_u16_be(data, 4)) else {
                    return Err(malformed(packet_id, "packet header attribute too short"));
                };
                packet_id = Some(id);
                hw_protocol = hw;
            }
            NFQA_MARK => match read_u32_be(data, 0) {
                Some(m) => mark = Some(m),
                None => return Err(malformed(packet_id, "mark attribute too short")),
            },
            NFQA_PAYLOAD => payload = data,
            _ => {}
        }
        offset += align4(nla_len);
    }
    let packet_id = packet_id.ok_or(malformed(None, "no packet header attribute"))?;
    Ok(QueuedPacket {
        packet_id,
        hw_protocol,
        mark,
        payload,
    })
}

/// Iterator returned by [`packets`].
#[derive(Debug)]
struct Packets<'a> {
    messages: Messages<'a>,
}

impl std::fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("len", &self.buf.len())
            .field("offset", &self.offset)
            .finish()
    }
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<QueuedPacket<'a>, NfQueueError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let message = match self.messages.next()? {
                Ok(message) => message,
                Err(what) => {
                    return Some(Err(NfQueueError::Malformed {
                        packet_id: None,
                        what,
                    }));
                }
            };
            if message.msg_type == queue_msg_type(NFQNL_MSG_PACKET) {
                let decoded = decode_packet(message.body);
                return Some(match decoded {
                    Ok(packet) if message.truncated => Err(NfQueueError::Malformed {
                        packet_id: Some(packet.packet_id),
                        what: "message cut short (receive buffer too small?)",
                    }),
                    other => other,
                });
            }
            if message.msg_type == NLMSG_ERROR {
                match ack_errno(message.body) {
                    Some(0) => continue, // an acknowledgement
                    Some(errno) => {
                        return Some(Err(NfQueueError::Kernel {
                            seq: message.seq,
                            error: io::Error::from_raw_os_error(errno),
                        }));
                    }
                    None => {
                        return Some(Err(NfQueueError::Malformed {
                            packet_id: None,
                            what: "netlink error message too short",
                        }));
                    }
                }
            }
            // NLMSG_NOOP, NLMSG_DONE, NLMSG_OVERRUN and anything unknown: nothing to answer.
        }
    }
}

/// Walk every message of a received datagram: queued packets as `Ok`; kernel errors and
/// undecodable messages as `Err` (a [`NfQueueError::Malformed`] carries the packet id when it
/// could be read, so the packet can still get a verdict). Acknowledgements, `NLMSG_NOOP` and
/// other non-packet messages are skipped. Total over any input; never allocates.
pub fn packets(buf: &[u8]) -> impl Iterator<Item = Result<QueuedPacket<'_>, NfQueueError>> {
    Packets {
        messages: Messages::new(buf),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Build one queue packet message the way the kernel does.
    fn packet_msg(id: u32, mark: Option<u32>, payload: Option<&[u8]>) -> Vec<u8> {
        let mut attrs = Vec::new();
        let mut push = |ty: u16, data: &[u8]| {
            let len = u16::try_from(4 + data.len()).unwrap();
            attrs.extend_from_slice(&len.to_ne_bytes());
            attrs.extend_from_slice(&ty.to_ne_bytes());
            attrs.extend_from_slice(data);
            while attrs.len() % 4 != 0 {
                attrs.push(0);
            }
        };
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(1); // NF_INET_LOCAL_IN
        push(NFQA_PACKET_HDR, &hdr);
        if let Some(mark) = mark {
            push(NFQA_MARK, &mark.to_be_bytes());
        }
        push(5, &7u32.to_be_bytes()); // NFQA_IFINDEX_INDEV: ignored
        if let Some(payload) = payload {
            push(NFQA_PAYLOAD, payload);
        }
        let mut body = vec![libc::AF_INET as u8, 0, 0, 7];
        body.extend_from_slice(&attrs);
        nlmsg(queue_msg_type(NFQNL_MSG_PACKET), 0, &body)
    }

    fn nlmsg(msg_type: u16, seq: u32, body: &[u8]) -> Vec<u8> {
        let len = u32::try_from(16 + body.len()).unwrap();
        let mut m = len.to_ne_bytes().to_vec();
        m.extend_from_slice(&msg_type.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    fn error_msg(seq: u32, errno: i32) -> Vec<u8> {
        let mut body = (-errno).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; 16]); // the echoed request header
        nlmsg(NLMSG_ERROR, seq, &body)
    }

    const PAYLOAD: &[u8] = b"\x45\x00\x00\x14abcdefghijklmnop";

    #[test]
    fn one_packet() {
        let datagram = packet_msg(42, Some(0x2a), Some(PAYLOAD));
        let got: Vec<_> = packets(&datagram).collect();
        assert_eq!(got.len(), 1);
        let p = got[0].as_ref().unwrap();
        assert_eq!(p.packet_id, 42);
        assert_eq!(p.hw_protocol, 0x0800);
        assert_eq!(p.mark, Some(0x2a));
        assert_eq!(p.payload, PAYLOAD);
    }

    #[test]
    fn packet_without_mark_or_payload() {
        let datagram = packet_msg(1, None, None);
        let p = packets(&datagram).next().unwrap().unwrap();
        assert_eq!((p.packet_id, p.mark, p.payload), (1, None, &[][..]));
    }

    #[test]
    fn several_messages_acks_and_noops() {
        let mut datagram = packet_msg(1, None, Some(b"a"));
        datagram.extend(error_msg(9, 0)); // ack: skipped
        datagram.extend(nlmsg(1, 0, &[])); // NLMSG_NOOP: skipped
        datagram.extend(packet_msg(2, None, Some(b"bc")));
        datagram.extend(error_msg(10, libc::ENOENT));
        datagram.extend(nlmsg(queue_msg_type(NFQNL_MSG_VERDICT), 0, &[0; 4])); // not for us
        datagram.extend(packet_msg(3, Some(1), Some(b"def")));
        let got: Vec<_> = packets(&datagram).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap().payload, b"a");
        assert_eq!(got[1].as_ref().unwrap().payload, b"bc");
        match &got[2] {
            Err(NfQueueError::Kernel { seq: 10, error }) => {
                assert_eq!(error.raw_os_error(), Some(libc::ENOENT));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[3].as_ref().unwrap().packet_id, 3);
    }

    #[test]
    fn malformed_messages() {
        let good = packet_msg(77, Some(5), Some(PAYLOAD));
        let mut bad_attr_len = good.clone();
        // first attribute (packet header) at 20: claim 2 bytes
        bad_attr_len[20..22].copy_from_slice(&2u16.to_ne_bytes());
        let mut attr_past_end = good.clone();
        // second attribute (mark) at 32: claim it runs past the message
        attr_past_end[32..34].copy_from_slice(&500u16.to_ne_bytes());
        let mut short_header_attr = good.clone();
        short_header_attr[20..22].copy_from_slice(&6u16.to_ne_bytes());
        let mut short_nlmsg_len = good.clone();
        short_nlmsg_len[0..4].copy_from_slice(&8u32.to_ne_bytes());
        let mut long_nlmsg_len = good.clone();
        long_nlmsg_len[0..4].copy_from_slice(&4096u32.to_ne_bytes());
        let no_header = nlmsg(queue_msg_type(NFQNL_MSG_PACKET), 0, &[2, 0, 0, 0]);
        let no_nfgenmsg = nlmsg(queue_msg_type(NFQNL_MSG_PACKET), 0, &[2, 0]);
        let short_error = nlmsg(NLMSG_ERROR, 0, &[1, 2]);
        let cases: [(&str, &[u8], Option<u32>); 9] = [
            ("attribute length below header", &bad_attr_len, None),
            ("attribute past end, after header", &attr_past_end, Some(77)),
            (
                "packet header attribute too short",
                &short_header_attr,
                None,
            ),
            ("nlmsg_len below header", &short_nlmsg_len, None),
            ("nlmsg_len past datagram", &long_nlmsg_len, Some(77)),
            ("no packet header", &no_header, None),
            ("no nfgenmsg", &no_nfgenmsg, None),
            ("short error message", &short_error, None),
            ("short datagram", &good[..10], None),
        ];
        for (name, datagram, want_id) in cases {
            let got: Vec<_> = packets(datagram).collect();
            assert_eq!(got.len(), 1, "{name}: {got:?}");
            match &got[0] {
                Err(e @ NfQueueError::Malformed { packet_id, .. }) => {
                    assert_eq!(*packet_id, want_id, "{name}");
                    assert!(e.to_string().starts_with("malformed queue message"), "{e}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn truncated_datagram_never_panics_and_recovers_ids() {
        let mut datagram = packet_msg(5, Some(9), Some(PAYLOAD));
        datagram.extend(packet_msg(6, None, Some(PAYLOAD)));
        let first_len = packet_msg(5, Some(9), Some(PAYLOAD)).len();
        for len in 0..=datagram.len() {
            let got: Vec<_> = packets(&datagram[..len]).collect();
            for item in &got {
                match item {
                    Ok(p) => assert!(p.packet_id == 5 || p.packet_id == 6),
                    Err(NfQueueError::Malformed { packet_id, .. }) => {
                        assert!(matches!(packet_id, None | Some(5) | Some(6)), "{len}");
                    }
                    Err(other) => panic!("{len}: {other:?}"),
                }
            }
            if len >= first_len {
                assert_eq!(got[0].as_ref().map(|p| p.packet_id).ok(), Some(5), "{len}");
            }
            // past the packet header attribute (16 + 4 + 12 bytes) the id is always found
            if len >= 32 {
                let id = match &got[0] {
                    Ok(p) => Some(p.packet_id),
                    Err(NfQueueError::Malformed { packet_id, .. }) => *packet_id,
                    Err(_) => None,
                };
                assert_eq!(id, Some(5), "{len}");
            }
        }
    }

    #[test]
    fn verdict_message_layout() {
        let mut msg = verdict_message(7, 0x0102_0304, NF_ACCEPT, Some(0xa0b0_c0d0));
        let bytes = msg.bytes().unwrap().to_vec();
        let mut want = Vec::new();
        want.extend_from_slice(&40u32.to_ne_bytes());
        want.extend_from_slice(&0x0301u16.to_ne_bytes());
        want.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 7]);
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&NFQA_VERDICT_HDR.to_ne_bytes());
        want.extend_from_slice(&[0, 0, 0, 1, 1, 2, 3, 4]);
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&NFQA_MARK.to_ne_bytes());
        want.extend_from_slice(&[0xa0, 0xb0, 0xc0, 0xd0]);
        assert_eq!(bytes, want);

        let mut drop = verdict_message(0, 1, NF_DROP, None);
        assert_eq!(drop.bytes().unwrap().len(), 32);
    }

    #[test]
    fn config_message_pads_attributes() {
        let mut msg: MessageBuf<64> = MessageBuf::new(
            queue_msg_type(NFQNL_MSG_CONFIG),
            NLM_F_REQUEST | NLM_F_ACK,
            3,
            0x0102,
        );
        msg.attr(NFQA_CFG_PARAMS, &[0, 0, 0, 128, NFQNL_COPY_PACKET]);
        assert_eq!(msg.seq(), 3);
        let bytes = msg.bytes().unwrap();
        assert_eq!(bytes.len(), 16 + 4 + 12);
        assert_eq!(&bytes[18..20], &[0x01, 0x02]); // res_id big endian
        assert_eq!(&bytes[20..22], &9u16.to_ne_bytes()); // nla_len excludes padding
        assert_eq!(&bytes[24..32], &[0, 0, 0, 128, 2, 0, 0, 0]);
    }

    #[test]
    fn message_overflow_is_reported_not_panicked() {
        let mut msg: MessageBuf<24> = MessageBuf::new(0, 0, 0, 0);
        msg.attr(1, &[0; 8]);
        assert!(msg.bytes().is_none());
    }

    #[test]
    fn error_messages_name_the_step() {
        let e = NfQueueError::BindQueue {
            queue: 0,
            error: io::Error::from_raw_os_error(libc::EBUSY),
        };
        assert!(e.to_string().starts_with("bind queue 0: "), "{e}");
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = NfQueueError::Malformed {
            packet_id: Some(3),
            what: "x",
        };
        assert_eq!(e.to_string(), "malformed queue message for packet 3: x");
        assert!(e.io_error().is_none());
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for item in packets(&bytes).take(1000) {
                let _ = item;
            }
        }

        #[test]
        fn mutated_messages_never_panic(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut datagram = packet_msg(11, Some(2), Some(PAYLOAD));
            datagram.extend(error_msg(1, 0));
            datagram.extend(packet_msg(12, None, Some(b"x")));
            for (at, byte) in flips {
                let i = at % datagram.len();
                datagram[i] = byte;
            }
            // every item consumes at least one 16-byte header, or ends the walk
            let n = packets(&datagram).count();
            prop_assert!(n <= datagram.len() / 16 + 1);
        }
    }
}
