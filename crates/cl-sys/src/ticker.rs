//! A periodic clock on a timerfd: one wake-up per period.
//!
//! `tokio::time::interval` keeps its deadlines in a hierarchical wheel: a deadline more than
//! 64 ms away first wakes the process at the start of its coarse slot, to be moved to a finer
//! one, and only then at the deadline itself; re-arming it also pokes the runtime's eventfd.
//! For the heartbeat sender and the pinger, which tick five to ten times a second for ever,
//! that doubled the idle wake-ups. The kernel's periodic timerfd re-arms itself and wakes the
//! process once per period, at the exact instant.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;

/// The timerfd, as tokio's readiness wants it (`AsRawFd`).
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Ticks every period on CLOCK_MONOTONIC (the first tick at once, one period from now, or at
/// the next multiple of the period, by constructor); missed ticks are skipped (like
/// `tokio::time::MissedTickBehavior::Skip`: the next tick keeps the original grid).
pub struct Ticker {
    fd: AsyncFd<Fd>,
}

impl Ticker {
    /// A ticker of `period` (at least 1 µs); needs a tokio runtime with IO enabled.
    pub fn new(period: Duration) -> io::Result<Ticker> {
        // The first expiry 1 ns from now: "at once", as a zero would disarm the timer.
        Ticker::starting(Duration::from_nanos(1), period)
    }

    /// A ticker of `period` whose first tick is one period from now, not at once.
    pub fn after(period: Duration) -> io::Result<Ticker> {
        Ticker::starting(period, period)
    }

    /// A ticker of `period` that ticks at the multiples of `period` on CLOCK_MONOTONIC (the
    /// first at the next one): every process of the host knows when it ticks
    /// ([`crate::clock::until_multiple`]).
    pub fn on_grid(period: Duration) -> io::Result<Ticker> {
        let period = period.max(Duration::from_micros(1));
        // Relative to a reading of the clock, off the grid by the microseconds until it is
        // armed: an absolute expiry would be shifted by libraries that fake the time of day
        // (libfaketime, which the tests use to step a node's clock).
        // The clock is read after the timerfd is made, right before it is armed.
        Ticker::arm(period, || crate::clock::until_multiple(crate::clock::monotonic(), period))
    }

    fn starting(first: Duration, period: Duration) -> io::Result<Ticker> {
        Ticker::arm(period, || first)
    }

    fn arm(period: Duration, first: impl FnOnce() -> Duration) -> io::Result<Ticker> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        let period = TimeSpec::from_duration(period.max(Duration::from_micros(1)));
        let first = TimeSpec::from_duration(first().max(Duration::from_nanos(1)));
        timer.set(Expiration::IntervalDelayed(first, period), TimerSetTimeFlags::empty())?;
        // Readable only: a timerfd is never written, so no wake-ups for write readiness.
        // SAFETY: `Fd` owns the timerfd and hands out that one descriptor for as long as it
        // lives; the AsyncFd owns the `Fd`, so the descriptor stays open and the same until the
        // AsyncFd is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(Fd(timer), tokio::io::Interest::READABLE)? };
        Ok(Ticker { fd })
    }

    /// Waits for the next tick; returns how many periods ended since the last one (more than 1:
    /// ticks were missed, e.g. the process was not scheduled).
    pub async fn tick(&mut self) -> io::Result<u64> {
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            let read = nix::unistd::read(ready.get_inner().0.as_fd(), &mut expirations);
            // Read (or found empty), the timerfd is not readable again until its next expiry,
            // which the reactor reports anew: clearing now saves a read that would only fail.
            match read {
                Ok(_) => {
                    ready.clear_ready();
                    return Ok(u64::from_ne_bytes(expirations));
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A one-shot alarm on a timerfd, at an instant of CLOCK_MONOTONIC. Moving it is one syscall
/// that wakes nobody: a tokio timer whose new deadline is the runtime's earliest pokes the
/// runtime's eventfd, two writes and an extra wake-up (clhbd moved its relay deadline after
/// most relays, issue 12).
pub struct Alarm {
    fd: AsyncFd<Fd>,
    at: Option<Duration>,
}

impl Alarm {
    /// A disarmed alarm; needs a tokio runtime with IO enabled.
    pub fn new() -> io::Result<Alarm> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // SAFETY: as in `Ticker::arm`: the AsyncFd owns the `Fd`, which owns the descriptor for
        // as long as it lives.
        let fd =
            unsafe { AsyncFd::register_with_interest(Fd(timer), tokio::io::Interest::READABLE)? };
        Ok(Alarm { fd, at: None })
    }

    /// Ring at `at` (a [`crate::clock::monotonic`] reading; at once if it has passed), or
    /// never (None). Nothing is done when that is already so.
    pub fn set(&mut self, at: Option<Duration>) -> io::Result<()> {
        if at == self.at {
            return Ok(());
        }
        let timer = &self.fd.get_ref().0;
        match at {
            Some(at) => {
                // Relative, as in `Ticker::on_grid`; an instant already passed rings at once.
                let wait = at.saturating_sub(crate::clock::monotonic());
                let wait = TimeSpec::from_duration(wait.max(Duration::from_nanos(1)));
                timer.set(Expiration::OneShot(wait), TimerSetTimeFlags::empty())?
            }
            None => timer.unset()?,
        }
        self.at = at;
        Ok(())
    }

    /// Waits until the alarm rings, which disarms it; for ever while it is disarmed.
    pub async fn rung(&mut self) -> io::Result<()> {
        if self.at.is_none() {
            return std::future::pending().await;
        }
        loop {
            let mut ready = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            match nix::unistd::read(ready.get_inner().0.as_fd(), &mut expirations) {
                Ok(_) => {
                    ready.clear_ready();
                    self.at = None;
                    return Ok(());
                }
                Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A clock for periodic work that must go on even without a timerfd: a [`Ticker`], or, if
/// none can be had (or it fails), tokio's interval (two wake-ups per tick, but ticking).
pub enum Periodic {
    /// One wake-up per tick.
    Timerfd(Ticker, Duration),
    /// The fallback.
    Wheel(tokio::time::Interval),
}

impl Periodic {
    /// Ticks every `period`, the first tick one period from now.
    pub fn after(period: Duration) -> Periodic {
        match Ticker::after(period) {
            Ok(ticker) => Periodic::Timerfd(ticker, period),
            Err(_) => Periodic::wheel(period),
        }
    }

    fn wheel(period: Duration) -> Periodic {
        let start = tokio::time::Instant::now() + period;
        let mut interval = tokio::time::interval_at(start, period.max(Duration::from_micros(1)));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Periodic::Wheel(interval)
    }

    /// Waits for the next tick (missed ones are skipped).
    pub async fn tick(&mut self) {
        if let Periodic::Timerfd(ticker, period) = self {
            let period = *period;
            if ticker.tick().await.is_ok() {
                return;
            }
            *self = Periodic::wheel(period);
        }
        if let Periodic::Wheel(interval) = self {
            interval.tick().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn an_alarm_rings_once_at_its_instant_and_can_be_moved_or_disarmed() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let bounded = Duration::from_secs(5);
            let mut alarm = Alarm::new().expect("timerfd");
            let t0 = Instant::now();
            let soon = crate::clock::monotonic() + Duration::from_millis(40);
            alarm.set(Some(soon + Duration::from_secs(60))).expect("set");
            alarm.set(Some(soon)).expect("moved earlier");
            tokio::time::timeout(bounded, alarm.rung()).await.expect("rang").expect("read");
            assert!(t0.elapsed() >= Duration::from_millis(39), "{:?}", t0.elapsed());
            // An instant already passed rings at once, and the alarm can be set again after.
            alarm.set(Some(Duration::from_nanos(1))).expect("past");
            tokio::time::timeout(bounded, alarm.rung()).await.expect("rang").expect("read");
            // Rung, it is disarmed: waiting now never ends.
            let again = tokio::time::timeout(Duration::from_millis(60), alarm.rung()).await;
            assert!(again.is_err(), "a disarmed alarm rang");
            // Disarmed before its instant, it does not ring.
            alarm.set(Some(crate::clock::monotonic() + Duration::from_millis(20))).expect("set");
            alarm.set(None).expect("unset");
            assert!(alarm.fd.get_ref().0.get().expect("timerfd_gettime").is_none(), "still armed");
            let quiet = tokio::time::timeout(Duration::from_millis(60), alarm.rung()).await;
            assert!(quiet.is_err(), "an alarm set to none rang");
        });
    }

    #[test]
    fn a_clock_on_the_grid_is_armed_for_the_next_multiple_of_its_period() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let period = Duration::from_millis(700);
            let ticker = Ticker::on_grid(period).expect("timerfd");
            // The kernel tells how long until the next expiry; read together with the clock,
            // the two give the expiry's instant, which must be a multiple of the period.
            let Some(Expiration::IntervalDelayed(left, every)) =
                ticker.fd.get_ref().0.get().expect("timerfd_gettime")
            else {
                panic!("not periodic");
            };
            let at = crate::clock::monotonic() + Duration::from(left);
            assert_eq!(Duration::from(every), period);
            let off = at.as_nanos() % period.as_nanos();
            let off = off.min(period.as_nanos() - off);
            // Off only by the microseconds between the two readings.
            assert!(off < Duration::from_millis(2).as_nanos(), "{off} ns off the grid");
        });
    }

    #[test]
    fn a_delayed_clock_first_ticks_one_period_from_now() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let period = Duration::from_millis(50);
            let t0 = Instant::now();
            let mut periodic = Periodic::after(period);
            assert!(matches!(periodic, Periodic::Timerfd(..)));
            periodic.tick().await;
            periodic.tick().await;
            let two = t0.elapsed();
            assert!(two >= period * 2 - Duration::from_millis(1), "{two:?}");
            assert!(two < period * 2 + Duration::from_secs(2), "{two:?}");
        });
    }

    #[test]
    fn ticks_at_once_then_every_period_and_skips_missed_ones() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async {
            let period = Duration::from_millis(50);
            let mut ticker = Ticker::new(period).expect("timerfd");
            let t0 = Instant::now();
            assert_eq!(ticker.tick().await.expect("tick"), 1);
            assert!(t0.elapsed() < period, "the first tick is at once");
            for _ in 0..3 {
                ticker.tick().await.expect("tick");
            }
            let three = t0.elapsed();
            assert!(three >= period * 3 - Duration::from_millis(1), "{three:?}");
            assert!(three < period * 3 + Duration::from_secs(2), "{three:?}");
            // Not polled for 4 periods: one tick reports them, the next is a period later.
            std::thread::sleep(period * 4);
            assert!(ticker.tick().await.expect("tick") >= 3);
            let before = Instant::now();
            ticker.tick().await.expect("tick");
            assert!(before.elapsed() <= period + Duration::from_secs(1));
        });
    }
}
