//! Fencing the set's lock holder: a run writes to the cluster only while it provably still
//! holds the lock, judged on its own clock.
//!
//! The holder knows when it sent the last renewal that the server accepted. Another run takes
//! the Lease over only once that renewal is a whole TTL old (by its clocks), so the holder is
//! safe until `sent + ttl - margin`, the margin (a third of the TTL) covering clock skew between
//! the two machines. The clock is `CLOCK_BOOTTIME`: it keeps counting while the process is
//! stopped (SIGSTOP), swapped out or the machine suspended, so a holder that resumes after a
//! pause finds its lease window closed and writes nothing. A renewal that finds another holder
//! closes it at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Nanoseconds on the boot-time clock (counts while the process or the machine sleeps).
pub fn boot_clock() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// How long after a renewal was sent the holder still trusts it.
pub fn window(ttl: Duration) -> Duration {
    ttl - ttl / 3
}

/// A boot clock: this machine's [`boot_clock`], or a test's.
pub type Clock = std::sync::Arc<dyn Fn() -> Duration + Send + Sync>;

/// Whether this run may still write, shared by the lock's renewer and every cluster write.
pub struct Fence {
    /// Boot-clock nanoseconds until which the lease is held.
    held_until: AtomicU64,
    lost: AtomicBool,
    why: Mutex<String>,
    clock: Clock,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("held_until", &self.held_until)
            .field("lost", &self.lost)
            .finish_non_exhaustive()
    }
}

impl Fence {
    /// A fence open until `until` on this machine's boot clock.
    pub fn until(until: Duration) -> Self {
        Self::on_clock(until, std::sync::Arc::new(boot_clock))
    }

    /// A fence open until `until` on `clock`.
    pub fn on_clock(until: Duration, clock: Clock) -> Self {
        Self {
            held_until: AtomicU64::new(until.as_nanos() as u64),
            lost: AtomicBool::new(false),
            why: Mutex::new(String::new()),
            clock,
        }
    }

    /// A renewal sent at `sent` (boot clock) was accepted: the window moves on.
    pub fn renewed(&self, sent: Duration, ttl: Duration) {
        let until = (sent + window(ttl)).as_nanos() as u64;
        self.held_until.fetch_max(until, Ordering::SeqCst);
    }

    /// The lease is gone (another holder, a refused renewal): closed for good.
    pub fn lose(&self, why: impl Into<String>) {
        if let Ok(mut w) = self.why.lock() {
            if w.is_empty() {
                *w = why.into();
            }
        }
        self.lost.store(true, Ordering::SeqCst);
    }

    /// Whether the lease was lost or its window has passed.
    pub fn closed(&self) -> bool {
        self.check().is_err()
    }

    /// `Ok` while the lease is provably held; else why not.
    pub fn check(&self) -> Result<(), String> {
        if self.lost.load(Ordering::SeqCst) {
            let why = self.why.lock().map(|w| w.clone()).unwrap_or_default();
            return Err(why);
        }
        let now = (self.clock)().as_nanos() as u64;
        let until = self.held_until.load(Ordering::SeqCst);
        if now > until {
            return Err(format!(
                "its last accepted renewal is {:.1} s past the safe window (the process was paused, or renewals failed)",
                Duration::from_nanos(now - until).as_secs_f64()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_is_open_within_its_window_and_closed_after_it() {
        let ttl = Duration::from_secs(15);
        let now = boot_clock();
        let f = Fence::until(now + window(ttl));
        assert!(f.check().is_ok());
        // A renewal sent long ago does not move the window back.
        f.renewed(now - Duration::from_secs(60), ttl);
        assert!(f.check().is_ok());
        let past = Fence::until(now - Duration::from_millis(1));
        let why = past.check().unwrap_err();
        assert!(why.contains("past the safe window"), "{why}");
        past.renewed(boot_clock(), ttl);
        assert!(past.check().is_ok(), "an accepted renewal reopens it");
    }

    #[test]
    fn a_lost_lease_stays_closed_and_says_why() {
        let f = Fence::until(boot_clock() + Duration::from_secs(60));
        f.lose("another holder took it");
        f.lose("a later reason");
        f.renewed(boot_clock(), Duration::from_secs(60));
        assert_eq!(f.check().unwrap_err(), "another holder took it");
        assert!(f.closed());
    }
}
