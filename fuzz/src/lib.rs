//! What every fuzz target shares: a global allocator that bounds memory. One allocation
//! larger than [`MAX_ALLOCATION`], or more than [`MAX_LIVE`] bytes live at once, aborts the
//! process with a message, which libFuzzer reports as a crash and saves the input of. Within
//! one input's run the bound is tighter, set by [`budget`]: the memory a parser holds may
//! grow with its input, but only by a constant factor ([`AMPLIFICATION`]), so that a
//! request cannot make the gateway hold many times its own size. (libFuzzer's own
//! `-malloc_limit_mb` needs a sanitizer's allocator hooks; the targets are built without a
//! sanitizer, so the bound is kept here. `-rss_limit_mb` still applies.)
//!
//! Each target calls [`budget`] with its input before running it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The largest single allocation allowed.
pub const MAX_ALLOCATION: usize = 32 << 20;
/// The most bytes allowed live at once.
pub const MAX_LIVE: usize = 256 << 20;

/// Within one input's run: the memory live beyond what was live before it may be at most
/// this many times the input's length ...
pub const AMPLIFICATION: usize = 256;
/// ... plus this much.
pub const SLACK: usize = 1 << 20;

static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The most bytes allowed live at once, for the input running now.
static LIMIT: AtomicUsize = AtomicUsize::new(MAX_LIVE);

/// Sets the memory bound of the input about to run: what is live now, plus
/// [`AMPLIFICATION`] times its length and [`SLACK`], at most [`MAX_LIVE`]. Returns the input.
pub fn budget(input: &[u8]) -> &[u8] {
    let limit = live()
        .saturating_add(SLACK)
        .saturating_add(input.len().saturating_mul(AMPLIFICATION))
        .min(MAX_LIVE);
    LIMIT.store(limit, Ordering::Relaxed);
    input
}

/// The bounded allocator: the system's, counting.
pub struct Bounded;

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Bytes currently allocated by Rust code.
pub fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

#[inline]
fn admit(size: usize, freed: usize) {
    let live = LIVE.load(Ordering::Relaxed).saturating_sub(freed);
    if size > MAX_ALLOCATION || live.saturating_add(size) > LIMIT.load(Ordering::Relaxed) {
        refuse(size, live);
    }
}

#[cold]
fn refuse(size: usize, live: usize) -> ! {
    // No allocation from here on: the message is formatted on the stack.
    let mut buf = [0u8; 256];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(
        out,
        "fedgate-fuzz: an allocation of {size} bytes with {live} bytes live exceeds the bound \
         ({MAX_ALLOCATION} bytes at once, {} live for this input)\n",
        LIMIT.load(Ordering::Relaxed)
    );
    let n = out.position() as usize;
    let _ = std::io::stderr().write_all(&buf[..n]);
    std::process::abort();
}

unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        admit(layout.size(), 0);
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        admit(layout.size(), 0);
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        admit(new_size, layout.size());
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}
