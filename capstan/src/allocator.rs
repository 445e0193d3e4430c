//! The process's memory allocator: jemalloc, so that the daemon's memory follows its work.
//!
//! Measured with `e2e/benches/memory.rs` (2,000 services applied, all changed, the stack
//! deleted, three times, RSS after the deletion): glibc's malloc keeps what a deleted stack
//! used in its arenas, 141-170 MiB and growing from cycle to cycle (`MALLOC_ARENA_MAX=2`
//! alike); `malloc_trim(0)` every 5 s gives most of it back (31-40 MiB) but must be called
//! and walks every heap; jemalloc with background threads returns freed pages by itself
//! within a second (`dirty_decay_ms`), 27 MiB after every cycle, the lowest and steadiest.
//! Two arenas suit a daemon of a few busy threads and keep fewer half-used pages. See the
//! README's *Memory* paragraph for the table.
//!
//! `CAPSTAN_ALLOCATOR` picks another allocator for such comparisons: `glibc` (the system's
//! malloc), `glibc-trim` (the same, trimmed every few seconds), `jemalloc` (the default).
//! The choice is made once, at the process's first allocation, before any other thread
//! exists, and never changes: each block is freed by the allocator that gave it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tikv_jemallocator::Jemalloc;

/// The environment variable that picks the allocator.
pub const VARIABLE: &str = "CAPSTAN_ALLOCATOR";

const UNSET: u8 = 0;
const JEMALLOC: u8 = 1;
const GLIBC: u8 = 2;
const GLIBC_TRIM: u8 = 3;
/// A value that names no allocator: jemalloc serves, and `main` refuses to go on.
const UNKNOWN: u8 = 4;

/// How often `glibc-trim` hands freed memory back (`malloc_trim(0)`).
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// jemalloc's options, read at its first use: background threads purge freed pages after
/// `dirty_decay_ms` (and the lazily freed ones after `muzzy_decay_ms`) without waiting for
/// an allocation to trigger it.
#[used]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: Conf =
    Conf(c"background_thread:true,narenas:2,dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// A C string pointer jemalloc reads (`const char *malloc_conf`).
#[repr(transparent)]
struct Conf(*const std::ffi::c_char);

// SAFETY: it points to a constant string and is never written.
unsafe impl Sync for Conf {}

/// The allocator chosen by [`VARIABLE`].
pub struct Chosen;

static CHOICE: AtomicU8 = AtomicU8::new(UNSET);

#[inline]
fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNSET => {
            let c = from_environment();
            CHOICE.store(c, Ordering::Relaxed);
            c
        }
        c => c,
    }
}

/// Reads [`VARIABLE`] without allocating (this runs inside the first allocation).
fn from_environment() -> u8 {
    // SAFETY: a NUL-terminated name; getenv neither allocates nor keeps the pointer.
    let value = unsafe { libc::getenv(c"CAPSTAN_ALLOCATOR".as_ptr()) };
    if value.is_null() {
        return JEMALLOC;
    }
    // SAFETY: getenv returned a NUL-terminated string that lives as long as the process's
    // environment, which nothing here changes.
    match unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() {
        b"" | b"jemalloc" => JEMALLOC,
        b"glibc" => GLIBC,
        b"glibc-trim" => GLIBC_TRIM,
        _ => UNKNOWN,
    }
}

/// Whether blocks come from glibc's malloc (else from jemalloc).
#[inline]
fn glibc() -> bool {
    matches!(choice(), GLIBC | GLIBC_TRIM)
}

// SAFETY: every call goes to the one allocator chosen for the whole process, which upholds
// GlobalAlloc's contract itself.
unsafe impl GlobalAlloc for Chosen {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if glibc() {
            System.alloc(layout)
        } else {
            Jemalloc.alloc(layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if glibc() {
            System.alloc_zeroed(layout)
        } else {
            Jemalloc.alloc_zeroed(layout)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if glibc() {
            System.dealloc(ptr, layout)
        } else {
            Jemalloc.dealloc(ptr, layout)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if glibc() {
            System.realloc(ptr, layout, new_size)
        } else {
            Jemalloc.realloc(ptr, layout, new_size)
        }
    }
}

/// Refuses a [`VARIABLE`] that names no allocator; with `glibc-trim`, starts the thread that
/// trims. Called first thing in `main`.
pub fn start() -> anyhow::Result<()> {
    match choice() {
        UNKNOWN => anyhow::bail!(
            "{VARIABLE}={:?} names no allocator: use jemalloc (the default), glibc or glibc-trim",
            std::env::var_os(VARIABLE).unwrap_or_default()
        ),
        GLIBC_TRIM => {
            std::thread::Builder::new()
                .name("malloc-trim".into())
                .spawn(|| loop {
                    std::thread::sleep(TRIM_EVERY);
                    // SAFETY: malloc_trim only returns free memory of glibc's heaps.
                    unsafe { libc::malloc_trim(0) };
                })?;
        }
        _ => {}
    }
    Ok(())
}
