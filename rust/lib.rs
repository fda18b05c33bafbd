//! scanarr's native engine: a parallel, fd-relative walk of volume roots that `lstat`s media files,
//! filters them by name, optionally fingerprints them with xxh3-128, and hands them out in bounded
//! batches. The core is plain Rust (tested with `cargo test`); `python.rs` is the only pyo3 glue.

pub mod filter;
pub mod fingerprint;
pub mod jsonenc;
pub mod paths;
pub mod stats;
pub mod sys;
pub mod walk;

#[cfg(feature = "python")]
mod python;

/// Extensions reported when the caller gives none (the protocol's default `scan_extensions`).
pub const DEFAULT_EXTENSIONS: [&str; 6] = ["mkv", "mp4", "avi", "m4v", "ts", "wmv"];

/// Head and tail sample of a `sampled` fingerprint.
pub const DEFAULT_SAMPLE_SIZE: u64 = 1 << 20;

/// Walker threads when the caller asks for 0.
pub const DEFAULT_THREADS: usize = 8;

/// Crate version, exposed to Python as `__version__`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
