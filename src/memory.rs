//! The binary's allocator, and when the run hands freed memory back to the kernel.
//!
//! The binary's allocator is [`SplitAllocator`] (see `main.rs`): mimalloc for
//! blocks under [`LARGE_BLOCK`], the C library's malloc for larger ones (on
//! Linux with glibc; elsewhere mimalloc for all). mimalloc gives each 32 MiB
//! range of its arena to one size class of page, and the day's large blocks
//! (rendered rows, runs of lines read back, their indexes), freed run after run,
//! left ranges that smaller blocks never reused: with every block in mimalloc a
//! 10M-row day peaked at 351–378 MiB, with blocks of 64 KiB or more in glibc's
//! one arena at 298–306, in the same time (BENCHMARKS.md, fourteenth session).
//!
//! Left to itself mimalloc either
//! returns freed pages to the kernel 10 ms after they are freed, which between two
//! batches of a day made the kernel zero fresh pages for a quarter of the CPU time,
//! or, with purging off, never: then memory freed by one stage stayed resident
//! while the next stage, which could not reuse it (other sizes, other threads'
//! pages, pages still shared with live blocks), took fresh pages on top of it. At
//! 10M usage rows that put the peak ~600 MB above the data ever live at once
//! (BENCHMARKS.md).
//!
//! So frees are scheduled for purging with a delay no run reaches (and glibc
//! never trims its heap by itself), and the job
//! purges at the few points where a large structure has just been dropped and the
//! next stage allocates something else, and after every 8th run of a day's
//! settlement, where the month sums grow on top of the pages the runs freed:
//! [`release_freed_memory`]. Where other threads are busy, only glibc's heap is
//! trimmed ([`release_freed_large_blocks`]: the day's usage ids gathered while
//! the state's JSON is parsed).
//!
//! An operator who would rather trade time for memory sets mimalloc's own
//! `MIMALLOC_PURGE_DELAY` (milliseconds), which the binary then leaves alone:
//! at 10M usage rows, 300 ms lowered the peak by ~30 MB and 100 ms by ~40 MB for
//! ~0.6 s more system time, 30 ms by ~60 MB for ~1 s (BENCHMARKS.md, measured
//! before the large blocks went to glibc).

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this many bytes or more are the C library's ([`SplitAllocator`]):
/// 64 KiB, above mimalloc's small and medium blocks, on Linux with glibc (whose
/// heap [`configure_allocator`] sets up for them); no block elsewhere.
pub const LARGE_BLOCK: usize = if cfg!(all(target_os = "linux", target_env = "gnu")) { 64 * 1024 } else { usize::MAX };

/// mimalloc for blocks under [`LARGE_BLOCK`] bytes, the C library's allocator
/// (`std::alloc::System`) for the others. Which one a block belongs to follows
/// from its size alone, which `GlobalAlloc` gives again when the block is freed
/// or resized; a resize across the limit moves the block.
pub struct SplitAllocator;

fn is_large(size: usize) -> bool {
    size >= LARGE_BLOCK
}

// SAFETY: each block is allocated, resized and freed by one allocator, chosen by
// the size the caller states (the same at the free as at the allocation, by
// `GlobalAlloc`'s contract); a resize across the limit allocates in the other,
// copies, and frees in the first.
unsafe impl GlobalAlloc for SplitAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if is_large(layout.size()) {
                System.alloc(layout)
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe {
            if is_large(layout.size()) {
                System.alloc_zeroed(layout)
            } else {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `layout` by `alloc` above, which chose
        // the allocator by the same size.
        unsafe {
            if is_large(layout.size()) {
                System.dealloc(ptr, layout)
            } else {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc` for the block's allocator; a block that changes
        // allocator is copied into a new block of the same alignment (its size is
        // valid for it by `realloc`'s contract) and freed only once copied.
        unsafe {
            match (is_large(layout.size()), is_large(new_size)) {
                (true, true) => System.realloc(ptr, layout, new_size),
                (false, false) => mimalloc::MiMalloc.realloc(ptr, layout, new_size),
                _ => {
                    let moved = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
                    if !moved.is_null() {
                        std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                    moved
                }
            }
        }
    }
}

/// `mi_option_purge_delay` (position 15 of `mi_option_e` in mimalloc.h, v2 and v3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// The purge delay the binary runs with, in milliseconds (mimalloc multiplies it by
/// `arena_purge_mult`, 1 in mimalloc v3): about a month, longer than any run. Freed pages are
/// marked for purging (which a delay of -1 would not do) but purged only when
/// [`release_freed_memory`] forces it.
pub const PURGE_DELAY_MS: std::os::raw::c_long = 2_592_000_000;

/// The environment variable through which mimalloc reads its purge delay.
pub const PURGE_DELAY_VARIABLE: &str = "MIMALLOC_PURGE_DELAY";

/// Configure the allocators for a run: call first thing in `main`, before any
/// thread starts. glibc's heap, which holds the large blocks, is one arena for
/// all threads (one of its own a thread kept each thread's freed blocks from the
/// others), takes every block under 32 MiB from its heap (not a mapping of its
/// own, whose pages are fresh each time) and is trimmed only by
/// [`release_freed_memory`]. mimalloc's purge delay is [`PURGE_DELAY_MS`] unless
/// the environment sets [`PURGE_DELAY_VARIABLE`].
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets options of glibc's allocator; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
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
/// calling thread purges every free range; then glibc's heap hands back its free
/// pages. Costs a few milliseconds; the stage after
/// it touches fresh pages for what it allocates, which it did before anyway, since
/// it could not reuse what was freed. Without [`SplitAllocator`] as the global
/// allocator (the tests), it tidies mimalloc's unused heaps and trims glibc's.
pub fn release_freed_memory() {
    // SAFETY: mi_collect only walks the calling thread's heap and the arenas.
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(false) });
    // SAFETY: as above; `true` forces the purge of every range marked for it.
    unsafe { libmimalloc_sys::mi_collect(true) };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands glibc's free pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hand glibc's free pages back to the kernel, and only those: the memory of
/// large blocks (from [`LARGE_BLOCK`]) freed so far. Unlike
/// [`release_freed_memory`] it waits for no other thread, so a task may call it
/// while the pool's other threads are busy.
pub fn release_freed_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only hands glibc's free pages back to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A block resized across [`LARGE_BLOCK`] (or, where there is none, across
    /// 1 MiB) moves to the other allocator with its bytes, at its alignment, and
    /// is freed by the allocator that holds it (a free by the wrong one would
    /// corrupt that allocator's heap).
    #[test]
    fn a_block_resized_across_the_limit_keeps_its_bytes() {
        let allocator = SplitAllocator;
        let limit = if LARGE_BLOCK == usize::MAX { 1 << 20 } else { LARGE_BLOCK };
        for align in [8, 4096] {
            let small = Layout::from_size_align(1000, align).unwrap();
            // SAFETY: every block is used within its size and freed once, with
            // the layout it has then.
            unsafe {
                let p = allocator.alloc(small);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                for i in 0..small.size() {
                    *p.add(i) = (i % 251) as u8;
                }
                let large = limit + 12_345;
                let p = allocator.realloc(p, small, large);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!((0..small.size()).all(|i| *p.add(i) == (i % 251) as u8));
                for i in small.size()..large {
                    *p.add(i) = (i % 241) as u8;
                }
                let larger = large + limit;
                let p = allocator.realloc(p, Layout::from_size_align(large, align).unwrap(), larger);
                assert!((0..small.size()).all(|i| *p.add(i) == (i % 251) as u8));
                assert!((small.size()..large).all(|i| *p.add(i) == (i % 241) as u8));
                let p = allocator.realloc(p, Layout::from_size_align(larger, align).unwrap(), 500);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!((0..500).all(|i| *p.add(i) == (i % 251) as u8));
                allocator.dealloc(p, Layout::from_size_align(500, align).unwrap());
            }
        }
    }

    #[test]
    fn large_zeroed_blocks_are_zero() {
        let allocator = SplitAllocator;
        let layout = Layout::from_size_align(LARGE_BLOCK.min(1 << 20) * 3, 64).unwrap();
        // SAFETY: the block is read within its size and freed once with its layout.
        unsafe {
            let p = allocator.alloc_zeroed(layout);
            assert!(!p.is_null() && (p as usize).is_multiple_of(64));
            assert!((0..layout.size()).all(|i| *p.add(i) == 0));
            allocator.dealloc(p, layout);
        }
    }
}
