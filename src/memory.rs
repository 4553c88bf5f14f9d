//! Gives freed heap memory back to the system.
//!
//! glibc's malloc returns memory on its own only from the top of a heap. After a burst (thousands
//! of namespaces provisioned at once, hundreds of connections opened and closed), the memory freed
//! in the middle of the heaps stays resident, and RSS stays at the burst's level although the live
//! heap is back down. A small task checks the heaps' free bytes every few seconds and, when a
//! burst has left at least `min_new_free_bytes` more of them, calls `malloc_trim(0)`, which hands
//! their whole free pages back. At start-up the number of malloc arenas is capped as well. Elsewhere
//! than glibc this does nothing.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct TrimPolicy {
    pub interval: Duration,
    /// Trim when the heaps' free bytes grew by this much since the last trim.
    pub min_new_free_bytes: usize,
}

impl Default for TrimPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            min_new_free_bytes: 1024 * 1024,
        }
    }
}

/// Malloc arenas the webhook uses unless `MALLOC_ARENA_MAX` says otherwise.
///
/// glibc gives each thread that meets a locked arena a new one, up to 8 per core, and memory freed
/// in one arena is not reused by another. The provisioner's burst work moves between tokio workers
/// and blocking threads, so with the default the same burst left a different amount resident from
/// run to run. Two arenas kept it lower and steady; the thread caches (tcache) still serve most
/// small allocations without taking an arena lock.
pub const DEFAULT_ARENA_MAX: i32 = 2;

/// The arena limit to set at start-up: none when the operator set `MALLOC_ARENA_MAX`, which glibc
/// already applied.
pub fn arena_limit(env_value: Option<&std::ffi::OsStr>) -> Option<i32> {
    match env_value {
        Some(_) => None,
        None => Some(DEFAULT_ARENA_MAX),
    }
}

/// Caps the number of malloc arenas. Call before any thread is started: threads that already have
/// an arena keep it. Elsewhere than glibc this does nothing; returns whether the limit was set.
pub fn limit_arenas(max: i32) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's tuning parameters.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, max) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = max;
        false
    }
}

/// Bytes that are free inside the allocator's heaps (glibc's `mallinfo2().fordblks`).
pub fn free_heap_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Returns free heap pages to the system; whether any were returned.
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes the allocator's own locks; any thread may call it.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Decides when to trim from successive readings of the free heap bytes.
#[derive(Debug)]
pub struct Trimmer {
    policy: TrimPolicy,
    /// Free bytes right after the last trim (or the lowest reading since).
    baseline: Option<usize>,
}

impl Trimmer {
    pub fn new(policy: TrimPolicy) -> Self {
        Self {
            policy,
            baseline: None,
        }
    }

    /// Whether a reading of `free` bytes calls for a trim. Free memory that a trim could not hand
    /// back (small holes between live blocks) is not retried until more is freed.
    pub fn should_trim(&mut self, free: usize) -> bool {
        match self.baseline {
            Some(baseline) if free < baseline.saturating_add(self.policy.min_new_free_bytes) => {
                self.baseline = Some(baseline.min(free));
                false
            }
            _ => true,
        }
    }

    pub fn trimmed(&mut self, free_after: usize) {
        self.baseline = Some(free_after);
    }
}

/// Checks every `policy.interval` until `shutdown`.
pub fn spawn_trimmer(policy: TrimPolicy, shutdown: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut trimmer = Trimmer::new(policy);
        let mut ticks = tokio::time::interval(policy.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = shutdown.cancelled() => return,
            }
            // mallinfo2 and malloc_trim walk the heaps under their locks: off the async workers,
            // so that a long walk does not hold up the requests queued on one.
            let checked = tokio::task::spawn_blocking(move || {
                let free = free_heap_bytes()?;
                let returned = trimmer.should_trim(free).then(|| {
                    let returned = trim();
                    trimmer.trimmed(free_heap_bytes().unwrap_or(free));
                    returned
                });
                Some((trimmer, free, returned))
            })
            .await;
            let Ok(Some((checked_trimmer, free, returned))) = checked else {
                return;
            };
            trimmer = checked_trimmer;
            if let Some(returned) = returned {
                tracing::debug!(free_bytes = free, returned, "heap trimmed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operator_setting_wins_over_the_default_arena_limit() {
        assert_eq!(arena_limit(None), Some(DEFAULT_ARENA_MAX));
        assert_eq!(arena_limit(Some(std::ffi::OsStr::new("8"))), None);
        assert_eq!(arena_limit(Some(std::ffi::OsStr::new(""))), None);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_arena_limit() {
        assert!(limit_arenas(DEFAULT_ARENA_MAX));
    }

    #[test]
    fn trims_when_a_burst_frees_memory_and_not_again_until_the_next() {
        let mib = 1024 * 1024;
        let mut trimmer = Trimmer::new(TrimPolicy {
            interval: Duration::from_secs(1),
            min_new_free_bytes: mib,
        });
        // (free bytes read, trim expected)
        let readings = [
            (100_000, true), // first reading: trim once to set the baseline
            (150_000, false),
            (mib, false),           // grew by less than 1 MiB over the baseline
            (100_000 + mib, true),  // a burst freed 1 MiB more
            (100_000 + mib, false), // what the trim could not return is not retried
            (50_000, false),        // reused: the baseline follows it down
            (50_000 + mib, true),
        ];
        for (i, (free, expected)) in readings.into_iter().enumerate() {
            assert_eq!(trimmer.should_trim(free), expected, "reading {i}: {free}");
            if expected {
                trimmer.trimmed(free);
            }
        }
    }
}
