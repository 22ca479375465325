//! Which process is at the other end of one of our Unix connections.
//!
//! All workers accept on one shared socket, so a connection does not say which worker
//! took it, and `SO_PEERCRED` names whoever called `listen` (us). The kernel knows the
//! peer socket, though: `sock_diag` answers a Unix socket's peer inode
//! (`UNIX_DIAG_PEER`), and `/proc/<pid>/fd` shows who holds that inode. Used only when a
//! worker has to be stopped: still busy with a request at its deadline.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::libc;

const NETLINK_SOCK_DIAG: libc::c_int = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const UDIAG_SHOW_PEER: u32 = 4;
const UNIX_DIAG_PEER: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// `struct unix_diag_msg`.
const DIAG_MSG_LEN: usize = 16;

/// The inode of the socket at the other end of `fd`, a connected Unix stream socket.
#[allow(unsafe_code)]
pub fn peer_inode(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let ino = u32::try_from(nix::sys::stat::fstat(fd.as_raw_fd())?.st_ino)
        .map_err(|_| io::Error::other("socket inode out of range"))?;
    // SAFETY: socket(2) with constant arguments; the fd is owned at once.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    // nlmsghdr + unix_diag_req, native endian as the kernel reads them.
    let mut req = Vec::with_capacity(NLMSG_HDRLEN + 24);
    req.extend_from_slice(&((NLMSG_HDRLEN + 24) as u32).to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, pad
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // no cookie
    req.extend_from_slice(&u32::MAX.to_ne_bytes());
    // SAFETY: the buffer is valid for its length; netlink needs no address to reach
    // the kernel on a fresh socket.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = [0u8; 1024];
    // SAFETY: the buffer is valid for its length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_peer(&buf[..n as usize])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The `UNIX_DIAG_PEER` attribute of a `sock_diag` answer.
fn parse_peer(b: &[u8]) -> io::Result<u32> {
    let bad = || io::Error::other("unexpected sock_diag answer");
    let len = u32_at(b, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(b, 4).ok_or_else(bad)?;
    if kind == NLMSG_ERROR {
        let errno = u32_at(b, NLMSG_HDRLEN).ok_or_else(bad)? as i32;
        return Err(io::Error::from_raw_os_error(-errno));
    }
    let msg = b.get(..len.min(b.len())).ok_or_else(bad)?;
    let mut at = NLMSG_HDRLEN + DIAG_MSG_LEN;
    while let (Some(alen), Some(atype)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
        let alen = usize::from(alen);
        if alen < 4 {
            break;
        }
        if atype == UNIX_DIAG_PEER {
            return u32_at(msg, at + 4).ok_or_else(bad);
        }
        at += (alen + 3) & !3;
    }
    Err(io::Error::other("the socket has no peer"))
}

/// Processes among `pids` holding the socket with inode `ino`.
pub fn holders(ino: u32, pids: impl IntoIterator<Item = i32>) -> Vec<i32> {
    let want = format!("socket:[{ino}]");
    pids.into_iter()
        .filter(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_peer_of_a_socket_pair_is_found_and_held_by_us() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let peer = peer_inode(a.as_fd()).expect("peer");
        let b_ino = nix::sys::stat::fstat(b.as_raw_fd()).expect("fstat").st_ino;
        assert_eq!(u64::from(peer), b_ino);
        let me = std::process::id() as i32;
        assert_eq!(holders(peer, [me]), [me]);
        drop(b);
        assert!(holders(peer, [me]).is_empty());
    }

    #[test]
    fn answers_that_are_not_a_peer_are_errors() {
        assert!(parse_peer(&[]).is_err());
        let mut err = vec![0u8; 20];
        err[..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-libc::ENOENT).to_ne_bytes());
        assert_eq!(
            parse_peer(&err).map_err(|e| e.raw_os_error()),
            Err(Some(libc::ENOENT))
        );
    }
}
