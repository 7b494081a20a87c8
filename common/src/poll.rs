//! The descriptor set the daemon loop waits on: `ppoll(2)` over a `pollfd` array that is
//! refilled, not reallocated, every wake (the loop runs at packet rate under load).

use std::os::fd::RawFd;
use std::time::Duration;

/// A reusable `pollfd` array. Fill it with [`PollSet::push`] after [`PollSet::clear`], wait
/// with [`PollSet::wait`], then ask per slot. A negative descriptor is skipped by the kernel
/// (and never reported ready), so a slot can stand for a source that is absent.
#[derive(Default)]
pub struct PollSet {
    pfds: Vec<libc::pollfd>,
}

impl PollSet {
    /// Empties the set, keeping its memory.
    pub fn clear(&mut self) {
        self.pfds.clear();
    }

    /// Adds `fd` (readability, and writability if `write`); returns its slot.
    pub fn push(&mut self, fd: RawFd, write: bool) -> usize {
        self.pfds.push(libc::pollfd {
            fd,
            events: libc::POLLIN | if write { libc::POLLOUT } else { 0 },
            revents: 0,
        });
        self.pfds.len() - 1
    }

    /// Waits until a descriptor is ready or `timeout` passes (at most 60 s). On a timeout or
    /// an error (EINTR from a signal) no slot is ready.
    pub fn wait(&mut self, timeout: Duration) {
        // ppoll, not poll: poll's whole milliseconds would turn a timer due in 0.9 ms into a
        // busy loop of zero timeouts until it is due (seen under strace: ~15 wake-ups per
        // timer).
        let timeout = timeout.min(Duration::from_secs(60));
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: pfds is a valid array of pollfd of the given length; ts outlives the call;
        // a null signal mask leaves the mask alone (like poll).
        let n = unsafe {
            libc::ppoll(
                self.pfds.as_mut_ptr(),
                self.pfds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if n <= 0 {
            for p in &mut self.pfds {
                p.revents = 0;
            }
        }
    }

    /// Slot `i` is readable, closed or in error (a read will not block).
    pub fn readable(&self, i: usize) -> bool {
        self.pfds[i].revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0
    }

    /// Slot `i` is writable.
    pub fn writable(&self, i: usize) -> bool {
        self.pfds[i].revents & libc::POLLOUT != 0
    }
}

#[cfg(test)]
mod tests {
    use super::PollSet;

    #[test]
    fn poll_waits_for_sub_millisecond_timeouts() {
        // With poll's whole milliseconds, 1.5 ms became 1 ms and 0.5 ms became 0: the loop
        // woke early and spun on zero timeouts until its timer was due.
        let mut fds = [0; 2];
        // SAFETY: fds has room for the two descriptors pipe writes.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let mut set = PollSet::default();
        for us in [500u64, 1500] {
            set.clear();
            let slot = set.push(fds[0], false);
            let t = std::time::Instant::now();
            set.wait(std::time::Duration::from_micros(us));
            assert!(!set.readable(slot) && !set.writable(slot));
            assert!(
                t.elapsed().as_micros() >= u128::from(us),
                "{us} µs: {:?}",
                t.elapsed()
            );
        }
        // A ready descriptor is reported in its slot; an absent one (-1) never is.
        // SAFETY: writing one byte from a local to our pipe.
        assert_eq!(unsafe { libc::write(fds[1], [1u8].as_ptr().cast(), 1) }, 1);
        set.clear();
        let absent = set.push(-1, false);
        let slot = set.push(fds[0], false);
        set.wait(std::time::Duration::from_secs(1));
        assert!(set.readable(slot) && !set.readable(absent));
        // SAFETY: both descriptors are ours and closed once.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
