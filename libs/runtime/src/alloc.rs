//! The memory allocator of every eventflow binary: jemalloc instead of the system's (glibc)
//! malloc. Each binary links this crate, so declaring the global allocator here gives all of
//! them the same one; the client libraries do not link it (their users choose their own).
//!
//! Why: a Publish, a delivery or an acknowledgement allocates and frees many small buffers
//! (HTTP/2 frames, protobuf messages, Redis replies) on several worker threads; glibc malloc
//! was ~19 % of the process's own samples at one event per call (docs/next-steps.md item 113).
//! jemalloc keeps per-thread caches and per-arena locks: the bench process spends ~10–20 % less
//! CPU per event (item 114). mimalloc saved about as much but committed whole arenas at once
//! on Linux (2–3x the peak RSS; turning that off needs an unsafe option call at start), while
//! jemalloc stays within a few MiB of glibc's RSS.

/// The allocator every allocation of the process goes through.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
