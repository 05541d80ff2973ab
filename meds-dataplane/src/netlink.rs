//! Netlink plumbing shared by the two raw `NETLINK_NETFILTER` clients, [`crate::nfqueue`]
//! (the packet path) and [`crate::conntrack`] (revocation): socket options, the kernel's
//! address, and a total, bounds-checked, non-allocating walk over the messages of a received
//! datagram. Written from `linux/netlink.h`.

use std::io;
use std::mem;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// `NLMSG_HDRLEN`: the aligned size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

pub(crate) fn kernel_address() -> libc::sockaddr_nl {
    // SAFETY: all-zero bytes are a valid sockaddr_nl (port 0 = kernel, no groups).
    let mut addr: libc::sockaddr_nl = unsafe { mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr
}

pub(crate) fn sockaddr_nl_len() -> libc::socklen_t {
    // The struct is 12 bytes; the cast cannot truncate.
    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t
}

pub(crate) fn set_int_option(
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

pub(crate) fn get_int_option(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
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

pub(crate) fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
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

pub(crate) fn align4(len: usize) -> usize {
    len.saturating_add(3) & !3
}

pub(crate) fn read_array<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

pub(crate) fn read_u16_ne(buf: &[u8], at: usize) -> Option<u16> {
    read_array(buf, at).map(u16::from_ne_bytes)
}

pub(crate) fn read_u32_ne(buf: &[u8], at: usize) -> Option<u32> {
    read_array(buf, at).map(u32::from_ne_bytes)
}

pub(crate) fn read_u16_be(buf: &[u8], at: usize) -> Option<u16> {
    read_array(buf, at).map(u16::from_be_bytes)
}

pub(crate) fn read_u32_be(buf: &[u8], at: usize) -> Option<u32> {
    read_array(buf, at).map(u32::from_be_bytes)
}

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawMessage<'a> {
    pub(crate) msg_type: u16,
    pub(crate) seq: u32,
    /// Everything after the netlink header (cut short when `truncated`).
    pub(crate) body: &'a [u8],
    /// The header claimed more bytes than the datagram holds.
    pub(crate) truncated: bool,
}

/// Iterator over the netlink messages of one datagram. Stops after the first error.
pub(crate) struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
    done: bool,
}

impl<'a> Messages<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Messages<'a> {
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
pub(crate) fn ack_errno(body: &[u8]) -> Option<i32> {
    let error = i32::from_ne_bytes(read_array(body, 0)?);
    Some(error.checked_neg().unwrap_or(i32::MAX))
}

impl std::fmt::Debug for Messages<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("len", &self.buf.len())
            .field("offset", &self.offset)
            .finish()
    }
}
