//! CPU limits for guests. Epochs count wall time, so the share is enforced by measuring the
//! guest thread's own CPU time at each epoch tick and sleeping off any excess: a token bucket
//! that earns `millis / 1000` CPU-seconds per second, holds at most [`BURST`] of credit, and
//! sleeps the thread while it is in debt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The most CPU time a guest may bank while idle (so a long-idle guest cannot then run
/// unthrottled for long).
const BURST: Duration = Duration::from_millis(100);

/// Sleep in slices this long so that a stop request is noticed promptly.
const SLICE: Duration = Duration::from_millis(20);

pub struct Throttle {
    share: f64,
    credit: f64,
    last_wall: Instant,
    last_cpu: Duration,
}

impl Throttle {
    pub fn new(millis: u64) -> Self {
        Self {
            share: (millis.max(1) as f64) / 1000.0,
            credit: 0.0,
            last_wall: Instant::now(),
            last_cpu: thread_cpu_time(),
        }
    }

    /// Charges the CPU time used since the last call; sleeps while over the share.
    pub fn charge(&mut self, stop: &AtomicBool) {
        let now = Instant::now();
        let cpu = thread_cpu_time();
        self.credit += now.duration_since(self.last_wall).as_secs_f64() * self.share;
        self.credit -= cpu.saturating_sub(self.last_cpu).as_secs_f64();
        self.credit = self.credit.min(BURST.as_secs_f64() * self.share);
        self.last_wall = now;
        self.last_cpu = cpu;
        if self.credit < 0.0 {
            // Paying the debt back takes debt / share of wall time.
            let mut owed = Duration::from_secs_f64(-self.credit / self.share);
            while !owed.is_zero() && !stop.load(Ordering::Relaxed) {
                let slice = owed.min(SLICE);
                std::thread::sleep(slice);
                owed -= slice;
            }
            let after = Instant::now();
            self.credit += after.duration_since(self.last_wall).as_secs_f64() * self.share;
            self.last_wall = after;
            self.last_cpu = thread_cpu_time();
        }
    }
}

/// CPU time consumed by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec, and CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
