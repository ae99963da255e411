//! The C allocator's settings for a long-running agent (glibc on Linux only; elsewhere these
//! functions do nothing).
//!
//! glibc serves an allocation above its mmap threshold (128 KiB at start) with its own
//! mapping, returned to the system when freed, but then raises the threshold to the size of
//! that block. An agent allocates a batch's buffers (contents, encoding, payload: megabytes
//! each) every few seconds, so after the first batch every such buffer came from the heap
//! arenas, where the holes they leave were never given back: the agent's RSS was half again
//! its heap at 100,000 tags/s (docs/BENCHMARKS.md). [`configure`] fixes the threshold at
//! 128 KiB, which stops that adjustment; [`release`] asks glibc to hand back free pages after
//! each batch.
//!
//! This module holds the agent's only `unsafe` code: two calls into the C library that take
//! integers and touch no memory of ours.

/// Fixed mmap threshold: glibc's initial value.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Call once, at the start of `run`, before any thread is started.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn configure() {
    // SAFETY: mallopt only changes the allocator's parameters; it takes plain integers and is
    // called before the runtime starts its threads.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) };
    if ok != 1 {
        tracing::warn!("mallopt(M_MMAP_THRESHOLD) was refused; memory use may grow");
    }
}

/// Gives free heap pages back to the system (after a batch's buffers were dropped).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release() {
    // SAFETY: malloc_trim takes the arenas' own locks and only returns free pages; it takes a
    // plain integer and touches no memory of ours.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn configure() {}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release() {}
