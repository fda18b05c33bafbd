//! xxh3-128 content fingerprints.
//!
//! `full` hashes the whole content. `sampled` hashes the 8-byte little-endian size followed by the
//! first and the last `sample_size` bytes (the whole content when the file is at most
//! 2 × `sample_size`): cheap on a NAS, and it still tells apart files of equal size whose ends
//! differ.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use xxhash_rust::xxh3::Xxh3Default;

use crate::sys::{self, Errno};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Sampled,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "full" => Some(Mode::Full),
            "sampled" => Some(Mode::Sampled),
            _ => None,
        }
    }
}

/// How a file is fingerprinted.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub mode: Mode,
    pub sample_size: u64,
}

/// Why a fingerprint could not be computed; `errno` is 0 when no syscall failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerprintError {
    pub errno: Errno,
    pub message: String,
}

impl FingerprintError {
    pub fn os(errno: Errno) -> Self {
        FingerprintError {
            errno,
            message: sys::message(errno),
        }
    }

    fn other(message: &str) -> Self {
        FingerprintError {
            errno: 0,
            message: message.to_owned(),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.errno == libc::ECANCELED
    }
}

/// Bytes per read: large enough to keep a NAS streaming, small enough to notice a cancel quickly.
pub const READ_CHUNK: usize = 1 << 20;

/// A reusable read buffer (one per thread).
pub struct Reader {
    buf: Vec<u8>,
}

impl Default for Reader {
    fn default() -> Self {
        Reader::new()
    }
}

impl Reader {
    pub fn new() -> Reader {
        Reader { buf: Vec::new() }
    }

    /// Hashes `len` bytes from `offset` (to the end of the file when `len` is `None`).
    fn hash_range(
        &mut self,
        fd: &OwnedFd,
        hasher: &mut Xxh3Default,
        mut offset: u64,
        len: Option<u64>,
        cancel: &AtomicBool,
    ) -> Result<(), FingerprintError> {
        if self.buf.is_empty() {
            self.buf = vec![0; READ_CHUNK];
        }
        let mut remaining = len.unwrap_or(u64::MAX);
        while remaining > 0 {
            if cancel.load(Ordering::Relaxed) {
                return Err(FingerprintError::os(libc::ECANCELED));
            }
            let want = usize::try_from(remaining).map_or(READ_CHUNK, |r| r.min(READ_CHUNK));
            let n = sys::pread(fd, &mut self.buf[..want], offset).map_err(FingerprintError::os)?;
            if n == 0 {
                if len.is_some() {
                    return Err(FingerprintError::other("file shrank while it was read"));
                }
                break;
            }
            hasher.update(&self.buf[..n]);
            offset += n as u64;
            remaining -= n as u64;
        }
        Ok(())
    }

    /// Fingerprints an open file; a non-regular file (FIFO, device) is refused.
    pub fn fingerprint_fd(
        &mut self,
        fd: &OwnedFd,
        spec: Spec,
        cancel: &AtomicBool,
    ) -> Result<u128, FingerprintError> {
        let st = sys::fstat(fd).map_err(FingerprintError::os)?;
        if !st.is_regular() {
            return Err(FingerprintError::other("not a regular file"));
        }
        let mut hasher = Xxh3Default::new();
        match spec.mode {
            Mode::Full => {
                sys::advise_sequential(fd);
                self.hash_range(fd, &mut hasher, 0, None, cancel)?;
            }
            Mode::Sampled => {
                let sample = spec.sample_size;
                hasher.update(&st.size.to_le_bytes());
                if st.size <= sample.saturating_mul(2) {
                    self.hash_range(fd, &mut hasher, 0, None, cancel)?;
                } else {
                    self.hash_range(fd, &mut hasher, 0, Some(sample), cancel)?;
                    self.hash_range(fd, &mut hasher, st.size - sample, Some(sample), cancel)?;
                }
            }
        }
        Ok(hasher.digest128())
    }

    /// Opens (without following a final symlink) and fingerprints the file at `path`.
    pub fn fingerprint_path(
        &mut self,
        path: &[u8],
        spec: Spec,
        cancel: &AtomicBool,
    ) -> Result<u128, FingerprintError> {
        let c_path = sys::c_path(path).map_err(FingerprintError::os)?;
        let fd = sys::open_file_at(libc::AT_FDCWD, &c_path).map_err(FingerprintError::os)?;
        self.fingerprint_fd(&fd, spec, cancel)
    }
}

/// Fingerprints `paths` on up to `threads` threads; results come back in input order.
pub fn fingerprint_many(
    paths: &[Vec<u8>],
    spec: Spec,
    threads: usize,
) -> Vec<Result<u128, FingerprintError>> {
    let never_cancelled = AtomicBool::new(false);
    let threads = threads.max(1).min(paths.len());
    if threads <= 1 {
        let mut reader = Reader::new();
        return paths
            .iter()
            .map(|p| reader.fingerprint_path(p, spec, &never_cancelled))
            .collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<u128, FingerprintError>>> = vec![None; paths.len()];
    let parts: Vec<Vec<(usize, Result<u128, FingerprintError>)>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut reader = Reader::new();
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(path) = paths.get(i) else {
                            return done;
                        };
                        done.push((i, reader.fingerprint_path(path, spec, &never_cancelled)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("fingerprint thread panicked"))
            .collect()
    });
    for (i, result) in parts.into_iter().flatten() {
        results[i] = Some(result);
    }
    results
        .into_iter()
        .map(|r| r.expect("every path was fingerprinted"))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use xxhash_rust::xxh3::xxh3_128;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("scanarr-fp-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &std::path::Path, content: &[u8]) -> Vec<u8> {
        std::fs::File::create(path)
            .unwrap()
            .write_all(content)
            .unwrap();
        path.as_os_str().as_encoded_bytes().to_vec()
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect()
    }

    /// The sampled fingerprint computed the plain way, for tests to check the engine against.
    pub(crate) fn sampled_reference(data: &[u8], sample: usize) -> u128 {
        let mut input = (data.len() as u64).to_le_bytes().to_vec();
        if data.len() <= 2 * sample {
            input.extend_from_slice(data);
        } else {
            input.extend_from_slice(&data[..sample]);
            input.extend_from_slice(&data[data.len() - sample..]);
        }
        xxh3_128(&input)
    }

    #[test]
    fn known_vectors() {
        // Reference values printed by Python's `xxhash.xxh3_128_hexdigest`.
        assert_eq!(
            crate::jsonenc::fingerprint_text(xxh3_128(b"")),
            "xxh3-128:99aa06d3014798d86001c324468d497f"
        );
        assert_eq!(
            crate::jsonenc::fingerprint_text(xxh3_128(b"scanarr")),
            "xxh3-128:b671b8b95517123da4d8321e89aca00b"
        );
    }

    #[test]
    fn full_and_sampled_match_their_definitions() {
        let dir = temp_dir("defs");
        let never = AtomicBool::new(false);
        let mut reader = Reader::new();
        let sample = 4096usize;
        for len in [0, 1, 100, 8191, 8192, 8193, 3 * READ_CHUNK + 17] {
            let data = content(len);
            let path = write(&dir.join(format!("f{len}")), &data);
            let full = Spec {
                mode: Mode::Full,
                sample_size: sample as u64,
            };
            let sampled = Spec {
                mode: Mode::Sampled,
                ..full
            };
            assert_eq!(
                reader.fingerprint_path(&path, full, &never),
                Ok(xxh3_128(&data)),
                "{len}"
            );
            assert_eq!(
                reader.fingerprint_path(&path, sampled, &never),
                Ok(sampled_reference(&data, sample)),
                "{len}"
            );
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn sampled_sample_larger_than_a_read_chunk() {
        let dir = temp_dir("bigsample");
        let sample = READ_CHUNK + 3;
        let data = content(2 * sample + 5);
        let path = write(&dir.join("f"), &data);
        let spec = Spec {
            mode: Mode::Sampled,
            sample_size: sample as u64,
        };
        let got = Reader::new().fingerprint_path(&path, spec, &AtomicBool::new(false));
        assert_eq!(got, Ok(sampled_reference(&data, sample)));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn many_in_order_with_errors() {
        let dir = temp_dir("many");
        let mut paths = Vec::new();
        let mut expected = Vec::new();
        for i in 0..20 {
            let data = content(i * 1000);
            paths.push(write(&dir.join(format!("f{i}")), &data));
            expected.push(Ok(xxh3_128(&data)));
        }
        paths.insert(
            3,
            dir.join("missing").as_os_str().as_encoded_bytes().to_vec(),
        );
        expected.insert(3, Err(FingerprintError::os(libc::ENOENT)));
        std::os::unix::fs::symlink(dir.join("f1"), dir.join("link")).unwrap();
        paths.push(dir.join("link").as_os_str().as_encoded_bytes().to_vec());
        expected.push(Err(FingerprintError::os(libc::ELOOP)));
        paths.push(dir.as_os_str().as_encoded_bytes().to_vec());
        expected.push(Err(FingerprintError::other("not a regular file")));
        let spec = Spec {
            mode: Mode::Full,
            sample_size: 1,
        };
        for threads in [1, 4] {
            assert_eq!(fingerprint_many(&paths, spec, threads), expected);
        }
        assert!(fingerprint_many(&[], spec, 4).is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = temp_dir("fifo");
        let path = dir.join("pipe.mkv");
        let c_path = sys::c_path(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let spec = Spec {
            mode: Mode::Sampled,
            sample_size: 16,
        };
        let got = Reader::new().fingerprint_path(
            path.as_os_str().as_encoded_bytes(),
            spec,
            &AtomicBool::new(false),
        );
        assert_eq!(got, Err(FingerprintError::other("not a regular file")));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn cancel_stops_a_full_hash() {
        let dir = temp_dir("cancel");
        let path = write(&dir.join("f"), &content(2 * READ_CHUNK));
        let spec = Spec {
            mode: Mode::Full,
            sample_size: 1,
        };
        let got = Reader::new().fingerprint_path(&path, spec, &AtomicBool::new(true));
        assert!(got.unwrap_err().is_cancelled());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
