//! When the run hands freed memory back to the kernel.
//!
//! The binary's allocator is mimalloc (see `main.rs`). Left to itself it either
//! returns freed pages to the kernel 10 ms after they are freed, which between two
//! batches of a day made the kernel zero fresh pages for a quarter of the CPU time,
//! or, with purging off, never: then memory freed by one stage stayed resident
//! while the next stage, which could not reuse it (other sizes, other threads'
//! pages, pages still shared with live blocks), took fresh pages on top of it. At
//! 10M usage rows that put the peak ~600 MB above the data ever live at once
//! (BENCHMARKS.md).
//!
//! So frees are scheduled for purging with a delay no run reaches, and the job
//! purges at the few points where a large structure has just been dropped and the
//! next stage allocates something else: [`release_freed_memory`].
//!
//! An operator who would rather trade time for memory sets mimalloc's own
//! `MIMALLOC_PURGE_DELAY` (milliseconds), which the binary then leaves alone:
//! at 10M usage rows, 300 ms lowered the peak by ~30 MB and 100 ms by ~40 MB for
//! ~0.6 s more system time, 30 ms by ~60 MB for ~1 s (BENCHMARKS.md).

/// `mi_option_purge_delay` (position 15 of `mi_option_e` in mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay the binary runs with, in milliseconds (mimalloc multiplies it by
/// `arena_purge_mult`, 1 in mimalloc v3): about a month, longer than any run. Freed pages are
/// marked for purging (which a delay of -1 would not do) but purged only when
/// [`release_freed_memory`] forces it.
pub const PURGE_DELAY_MS: std::os::raw::c_long = 2_592_000_000;

/// The environment variable through which mimalloc reads its purge delay.
pub const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// Configure mimalloc for a run: call first thing in `main`, before any thread
/// starts. The purge delay is [`PURGE_DELAY_MS`] unless the environment sets
/// [`PURGE_DELAY_VARIABLE`].
pub fn configure_allocator() {
    if std::env::var_os(PURGE_DELAY_VARIABLE).is_some() {
        return;
    }
    // SAFETY: sets a global option of the allocator; no other thread exists yet.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// The purge delay mimalloc runs with, in milliseconds.
pub fn purge_delay() -> std::os::raw::c_long {
    // SAFETY: reads a global option of the allocator.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

/// Hand the memory freed so far back to the kernel: every thread of the rayon pool
/// first frees its own pages that other threads' frees have emptied, then the
/// calling thread purges every free range. Costs a few milliseconds; the stage after
/// it touches fresh pages for what it allocates, which it did before anyway, since
/// it could not reuse what was freed. Without mimalloc as the global allocator (the
/// tests), it only tidies mimalloc's unused heaps.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks the calling thread's heap and the arenas.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(false) });
    // SAFETY: as above; `true` forces the purge of every range marked for it.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Ask the processor to bring `value` into the cache (a hint: it reads nothing the
/// program sees and never faults).
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` only hints the cache; the address is of a live value.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(std::ptr::from_ref(value).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Ask for every cache line `value` spans (a hint, as `prefetch`).
#[inline]
pub fn prefetch_whole<T>(value: &T) {
    let start = std::ptr::from_ref(value).cast::<u8>();
    for offset in (0..std::mem::size_of::<T>()).step_by(64) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `_mm_prefetch` only hints the cache and never faults; the address
        // lies inside a live value (`wrapping_add` stays within its bytes).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(start.wrapping_add(offset).cast::<i8>());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, offset);
    }
}
