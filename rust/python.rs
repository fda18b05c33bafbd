//! The pyo3 glue: `scanarr._native`. Everything here converts; the work happens in the core
//! modules. Blocking calls run with the interpreter detached so other Python threads (trio) go on.

use std::time::Duration;

use pyo3::exceptions::{PyIndexError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};

use crate::filter::Filter;
use crate::fingerprint::{self, Mode, Spec};
use crate::frames;
use crate::jsonenc::{self, FileFields};
use crate::liveindex;
use crate::livelist;
use crate::stats::WalkStats;
use crate::walk::{self, Next, Walk, WalkOptions};

/// A path for Python: `str` when it is UTF-8, `bytes` otherwise.
fn path_to_py<'py>(py: Python<'py>, path: &[u8]) -> Bound<'py, PyAny> {
    match std::str::from_utf8(path) {
        Ok(text) => PyString::new(py, text).into_any(),
        Err(_) => PyBytes::new(py, path).into_any(),
    }
}

/// A path from Python: `bytes` as is, `str` encoded like `os.fsencode` (surrogateescape).
fn path_from_py(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    if obj.is_instance_of::<PyString>() {
        let os: std::ffi::OsString = obj.extract()?;
        return Ok(os.into_encoded_bytes());
    }
    Err(PyTypeError::new_err(format!(
        "a path must be str or bytes, not {}",
        obj.get_type().name()?
    )))
}

/// A sequence of paths; a lone `str` or `bytes` is refused rather than split into characters.
fn paths_from_py(name: &str, items: &Bound<'_, PyAny>) -> PyResult<Vec<Vec<u8>>> {
    if items.is_instance_of::<PyString>() || items.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(format!(
            "{name} must be a sequence of paths, not a single path"
        )));
    }
    let items: Vec<Bound<'_, PyAny>> = items.extract()?;
    items.iter().map(path_from_py).collect()
}

fn fingerprint_mode(mode: &str) -> PyResult<Mode> {
    Mode::parse(mode).ok_or_else(|| {
        PyValueError::new_err(format!(
            "fingerprint mode must be 'full' or 'sampled', not {mode:?}"
        ))
    })
}

fn check_range(name: &str, value: u64, max: u64) -> PyResult<()> {
    if value == 0 || value > max {
        return Err(PyValueError::new_err(format!(
            "{name} must be between 1 and {max}, not {value}"
        )));
    }
    Ok(())
}

fn check_positive(name: &str, value: u64) -> PyResult<()> {
    if value == 0 {
        return Err(PyValueError::new_err(format!("{name} must be at least 1")));
    }
    Ok(())
}

/// Thread counts beyond this are a mistake, not a tuning choice.
const MAX_THREADS: usize = 1024;
/// The queue to Python is allocated up front: keep its bound sane.
const MAX_PENDING_BATCHES: usize = 4096;

fn thread_count(threads: usize) -> PyResult<usize> {
    match threads {
        0 => Ok(crate::DEFAULT_THREADS),
        n => check_range("threads", n as u64, MAX_THREADS as u64).map(|()| n),
    }
}

/// One media file, as `lstat` saw it.
#[pyclass(frozen, module = "scanarr._native", name = "FileRecord")]
pub struct FileRecord {
    #[pyo3(get)]
    root_index: u32,
    relative_path: Box<[u8]>,
    /// Where the file name starts in `relative_path`.
    name_start: usize,
    #[pyo3(get)]
    inode: u64,
    #[pyo3(get)]
    device_id: u64,
    #[pyo3(get)]
    hardlink_count: u64,
    #[pyo3(get)]
    size_bytes: u64,
    #[pyo3(get)]
    mtime_ns: i128,
    fingerprint: Option<u128>,
    fingerprint_error: Option<String>,
}

#[pymethods]
impl FileRecord {
    #[getter]
    fn relative_path<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        path_to_py(py, &self.relative_path)
    }
    #[getter]
    fn filename<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        path_to_py(py, &self.relative_path[self.name_start..])
    }
    #[getter]
    fn fingerprint(&self) -> Option<String> {
        self.fingerprint.map(jsonenc::fingerprint_text)
    }
    #[getter]
    fn fingerprint_error(&self) -> Option<&str> {
        self.fingerprint_error.as_deref()
    }
    fn __repr__(&self) -> String {
        format!(
            "FileRecord(root_index={}, relative_path={:?}, inode={}, device_id={}, size_bytes={}, \
             hardlink_count={}, mtime_ns={})",
            self.root_index,
            String::from_utf8_lossy(&self.relative_path),
            self.inode,
            self.device_id,
            self.size_bytes,
            self.hardlink_count,
            self.mtime_ns
        )
    }
}

/// A failure met during the walk.
#[pyclass(frozen, module = "scanarr._native", name = "WalkError")]
pub struct WalkError {
    error: walk::WalkError,
}

#[pymethods]
impl WalkError {
    #[getter]
    fn root_index(&self) -> u32 {
        self.error.root_index
    }
    #[getter]
    fn path<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        path_to_py(py, &self.error.path)
    }
    #[getter]
    fn errno(&self) -> i32 {
        self.error.errno
    }
    #[getter]
    fn kind(&self) -> &'static str {
        self.error.kind.as_str()
    }
    #[getter]
    fn message(&self) -> &str {
        &self.error.message
    }
    fn __repr__(&self) -> String {
        format!(
            "WalkError(kind={:?}, root_index={}, path={:?}, errno={}, message={:?})",
            self.error.kind.as_str(),
            self.error.root_index,
            String::from_utf8_lossy(&self.error.path),
            self.error.errno,
            self.error.message
        )
    }
}

/// Up to `batch_size` files and the errors met since the previous batch.
#[pyclass(frozen, module = "scanarr._native", name = "Batch")]
pub struct Batch {
    batch: walk::Batch,
    files: PyOnceLock<Py<PyList>>,
    errors: PyOnceLock<Py<PyList>>,
}

impl Batch {
    fn new(batch: walk::Batch) -> Batch {
        Batch {
            batch,
            files: PyOnceLock::new(),
            errors: PyOnceLock::new(),
        }
    }
}

#[pymethods]
impl Batch {
    /// Built on first access: a caller that only wants JSON never pays for these objects.
    #[getter]
    fn files(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let list = self.files.get_or_try_init(py, || {
            let records = self.batch.files.iter().map(|file| {
                let path = self.batch.relative_path(file);
                FileRecord {
                    root_index: file.root_index,
                    relative_path: path.into(),
                    name_start: path.len() - self.batch.filename(file).len(),
                    inode: file.inode,
                    device_id: file.device_id,
                    hardlink_count: file.hardlink_count,
                    size_bytes: file.size_bytes,
                    mtime_ns: file.mtime_ns(),
                    fingerprint: file.fingerprint,
                    fingerprint_error: file.fingerprint_error.clone(),
                }
            });
            let objects = records
                .map(|r| Bound::new(py, r))
                .collect::<PyResult<Vec<_>>>()?;
            PyResult::Ok(PyList::new(py, objects)?.unbind())
        })?;
        Ok(list.clone_ref(py))
    }

    #[getter]
    fn errors(&self, py: Python<'_>) -> PyResult<Py<PyList>> {
        let list = self.errors.get_or_try_init(py, || {
            let objects = self
                .batch
                .errors
                .iter()
                .map(|e| Bound::new(py, WalkError { error: e.clone() }))
                .collect::<PyResult<Vec<_>>>()?;
            PyResult::Ok(PyList::new(py, objects)?.unbind())
        })?;
        Ok(list.clone_ref(py))
    }

    #[getter]
    fn dirs_walked(&self) -> u64 {
        self.batch.dirs_walked
    }

    fn __len__(&self) -> usize {
        self.batch.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "Batch(files={}, errors={}, dirs_walked={})",
            self.batch.files.len(),
            self.batch.errors.len(),
            self.batch.dirs_walked
        )
    }

    /// Encodes every file as `heads[root_index] + BODY + tail`; see the stub for BODY.
    fn json_records<'py>(
        &self,
        py: Python<'py>,
        heads: Vec<String>,
        tail: &str,
    ) -> PyResult<(Bound<'py, PyList>, Vec<usize>)> {
        if let Some(head) = heads
            .iter()
            .find(|h| !(h.ends_with('{') || h.ends_with(',')))
        {
            return Err(PyValueError::new_err(format!(
                "each head must end with '{{' or ',': {head:?}"
            )));
        }
        let mut texts = Vec::with_capacity(self.batch.files.len());
        let mut not_utf8 = Vec::new();
        let mut text = String::with_capacity(512);
        for (index, file) in self.batch.files.iter().enumerate() {
            if !self.write_record(file, &heads, tail, &mut text)? {
                not_utf8.push(index);
                continue;
            }
            texts.push(PyString::new(py, &text));
        }
        Ok((PyList::new(py, texts)?, not_utf8))
    }

    // --- WebSocket frames of a batch (rust/frames.rs) ---

    /// The RFC 6455 text frames of `json_records`' texts, in one buffer: see `_native.pyi`.
    #[pyo3(signature = (heads, tail, *, masked, files_before = 0, progress_every = 0, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn json_frames<'py>(
        &self,
        py: Python<'py>,
        heads: Vec<String>,
        tail: &str,
        masked: bool,
        files_before: u64,
        progress_every: u64,
        progress: Option<Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyBytes>, Vec<usize>)> {
        check_heads(&heads)?;
        if progress_every > 0 && progress.is_none() {
            return Err(PyValueError::new_err(
                "progress_every needs a progress callable",
            ));
        }
        let mut keys = mask_keys(masked)?;
        // Room for the longest head plus the fields of a long path per file, so the buffer is
        // not moved while it fills: pages never written are never touched.
        let head_length = heads.iter().map(String::len).max().unwrap_or(0);
        let mut out = Vec::with_capacity(self.batch.files.len() * (head_length + 640));
        let mut not_utf8 = Vec::new();
        let mut text = String::with_capacity(512);
        let mut files = files_before;
        for (index, file) in self.batch.files.iter().enumerate() {
            if !self.write_record(file, &heads, tail, &mut text)? {
                not_utf8.push(index);
                continue;
            }
            let key = keys.as_mut().map(frames::MaskKeys::next_key);
            frames::push_text_frame(&mut out, text.as_bytes(), key);
            files += 1;
            if let Some(progress) = progress.as_ref().filter(|_| files % progress_every == 0) {
                let frame = progress.call1((files,))?;
                let frame = frame.cast::<PyString>()?.to_str()?;
                let key = keys.as_mut().map(frames::MaskKeys::next_key);
                frames::push_text_frame(&mut out, frame.as_bytes(), key);
            }
        }
        Ok((PyBytes::new(py, &out), not_utf8))
    }
}

/// Totals of a walk so far.
#[pyclass(frozen, module = "scanarr._native", name = "WalkStats")]
pub struct PyWalkStats {
    #[pyo3(get)]
    files: u64,
    #[pyo3(get)]
    dirs: u64,
    #[pyo3(get)]
    bytes_total: u64,
    #[pyo3(get)]
    distinct_inodes: u64,
    #[pyo3(get)]
    multi_link_files: u64,
    #[pyo3(get)]
    errors: u64,
    #[pyo3(get)]
    skipped_mounts: u64,
    #[pyo3(get)]
    non_utf8_files: u64,
}

impl From<WalkStats> for PyWalkStats {
    fn from(s: WalkStats) -> Self {
        PyWalkStats {
            files: s.files,
            dirs: s.dirs,
            bytes_total: s.bytes_total,
            distinct_inodes: s.distinct_inodes,
            multi_link_files: s.multi_link_files,
            errors: s.errors,
            skipped_mounts: s.skipped_mounts,
            non_utf8_files: s.non_utf8_files,
        }
    }
}

#[pymethods]
impl PyWalkStats {
    fn __repr__(&self) -> String {
        format!(
            "WalkStats(files={}, dirs={}, bytes_total={}, distinct_inodes={}, \
             multi_link_files={}, errors={}, skipped_mounts={}, non_utf8_files={})",
            self.files,
            self.dirs,
            self.bytes_total,
            self.distinct_inodes,
            self.multi_link_files,
            self.errors,
            self.skipped_mounts,
            self.non_utf8_files
        )
    }
}

/// The `extensions` argument: left out (the defaults), None (every file) or a list.
enum Extensions {
    Default,
    Every,
    Given(Vec<String>),
}

impl<'a, 'py> FromPyObject<'a, 'py> for Extensions {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if obj.is_none() {
            Ok(Extensions::Every)
        } else if obj.is_instance_of::<PyString>() {
            Err(PyTypeError::new_err(
                "extensions must be a sequence of str, not a single str",
            ))
        } else {
            Ok(Extensions::Given(obj.extract()?))
        }
    }
}

impl Extensions {
    fn into_filter(self) -> Filter {
        match self {
            Extensions::Default => Filter::default(),
            Extensions::Every => Filter::new(None::<Vec<String>>),
            Extensions::Given(exts) => Filter::new(Some(exts)),
        }
    }
}

/// Longest wait `next_batch` accepts in one call (a longer timeout is clamped).
const MAX_WAIT: Duration = Duration::from_secs(86_400);

/// A parallel walk over `roots`, started on construction, consumed with `next_batch`.
#[pyclass(frozen, module = "scanarr._native", name = "Walker")]
pub struct Walker {
    walk: Walk,
    given_roots: Vec<Vec<u8>>,
}

#[pymethods]
impl Walker {
    #[new]
    #[pyo3(signature = (
        roots,
        *,
        extensions = Extensions::Default,
        skip_hidden = true,
        skip_temp = true,
        skip_metadata = true,
        skip_system_dirs = true,
        exclude = None,
        same_device = true,
        threads = 0,
        batch_size = 1024,
        max_pending_batches = 4,
        fingerprint = None,
        sample_size = crate::DEFAULT_SAMPLE_SIZE,
        utf8_totals = false,
    ))]
    #[pyo3(
        text_signature = "(roots, *, extensions=..., skip_hidden=True, skip_temp=True, \
        skip_metadata=True, skip_system_dirs=True, exclude=(), same_device=True, threads=0, \
        batch_size=1024, max_pending_batches=4, fingerprint=None, sample_size=..., \
        utf8_totals=False)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        roots: &Bound<'_, PyAny>,
        extensions: Extensions,
        skip_hidden: bool,
        skip_temp: bool,
        skip_metadata: bool,
        skip_system_dirs: bool,
        exclude: Option<&Bound<'_, PyAny>>,
        same_device: bool,
        threads: usize,
        batch_size: usize,
        max_pending_batches: usize,
        fingerprint: Option<&str>,
        sample_size: u64,
        utf8_totals: bool,
    ) -> PyResult<Walker> {
        check_positive("batch_size", batch_size as u64)?;
        check_range(
            "max_pending_batches",
            max_pending_batches as u64,
            MAX_PENDING_BATCHES as u64,
        )?;
        let threads = thread_count(threads)?;
        check_positive("sample_size", sample_size)?;
        let fingerprint = fingerprint
            .map(|mode| fingerprint_mode(mode).map(|mode| Spec { mode, sample_size }))
            .transpose()?;
        let mut filter = extensions.into_filter();
        filter.skip_hidden = skip_hidden;
        filter.skip_temp = skip_temp;
        filter.skip_metadata = skip_metadata;
        filter.skip_system_dirs = skip_system_dirs;
        let given_roots = paths_from_py("roots", roots)?;
        let options = WalkOptions {
            filter,
            exclude: match exclude {
                Some(exclude) => paths_from_py("exclude", exclude)?,
                None => Vec::new(),
            },
            same_device,
            threads,
            batch_size,
            max_pending_batches,
            fingerprint,
            utf8_totals,
        };
        let start_roots = given_roots.clone();
        let walk = py.detach(move || Walk::start(start_roots, options))?;
        Ok(Walker { walk, given_roots })
    }

    /// The roots as given.
    #[getter]
    fn roots<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.given_roots.iter().map(|r| path_to_py(py, r)))
    }

    /// Waits up to `timeout` seconds for the next batch: an empty batch on timeout, None once the
    /// walk is over and everything was delivered.
    #[pyo3(signature = (timeout = 0.1))]
    fn next_batch(&self, py: Python<'_>, timeout: f64) -> PyResult<Option<Batch>> {
        if timeout.is_nan() {
            return Err(PyValueError::new_err("timeout must be a number"));
        }
        let timeout = Duration::try_from_secs_f64(timeout.max(0.0)).unwrap_or(MAX_WAIT);
        let timeout = timeout.min(MAX_WAIT);
        let next = py.detach(|| self.walk.next_batch(timeout));
        Ok(match next {
            Next::Batch(batch) => Some(Batch::new(batch)),
            Next::Timeout => Some(Batch::new(walk::Batch::default())),
            Next::Over => None,
        })
    }

    fn cancel(&self) {
        self.walk.cancel();
    }

    #[getter]
    fn finished(&self) -> bool {
        self.walk.is_finished()
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.walk.is_cancelled()
    }

    #[pyo3(signature = (root_index = None))]
    fn stats(&self, root_index: Option<usize>) -> PyResult<PyWalkStats> {
        match root_index {
            None => Ok(self.walk.stats().into()),
            Some(index) => self.walk.root_stats(index).map(Into::into).ok_or_else(|| {
                PyIndexError::new_err(format!(
                    "root_index {index} out of range ({} roots)",
                    self.given_roots.len()
                ))
            }),
        }
    }

    fn __repr__(&self) -> String {
        let roots: Vec<_> = self
            .given_roots
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect();
        format!("Walker(roots={roots:?})")
    }
}

/// Fingerprints many files in parallel with the interpreter detached.
#[pyfunction]
#[pyo3(signature = (paths, mode, *, sample_size = crate::DEFAULT_SAMPLE_SIZE, threads = 0))]
fn fingerprint_files(
    py: Python<'_>,
    paths: &Bound<'_, PyAny>,
    mode: &str,
    sample_size: u64,
    threads: usize,
) -> PyResult<Vec<(Option<String>, Option<String>)>> {
    check_positive("sample_size", sample_size)?;
    let spec = Spec {
        mode: fingerprint_mode(mode)?,
        sample_size,
    };
    let paths = paths_from_py("paths", paths)?;
    let threads = thread_count(threads)?;
    let results = py.detach(move || fingerprint::fingerprint_many(&paths, spec, threads));
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(digest) => (Some(jsonenc::fingerprint_text(digest)), None),
            Err(e) => (None, Some(e.message)),
        })
        .collect())
}

// --- the live watcher's native listing -------------------------------------------------------

/// Lists a directory tree for the live watcher, adding its inotify watches on the way
/// (`crate::livelist`). One lister serves many listings; `cancel` stops the one running and
/// every later one (the watcher is shutting down).
#[pyclass(frozen, module = "scanarr._native", name = "LiveLister")]
pub struct LiveLister {
    cancel: std::sync::atomic::AtomicBool,
}

#[pymethods]
impl LiveLister {
    #[new]
    fn new() -> LiveLister {
        LiveLister {
            cancel: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn cancel(&self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    #[getter]
    fn cancelled(&self) -> bool {
        self.cancel.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Lists `top` with the interpreter detached; None when cancelled.
    #[pyo3(signature = (top, *, inotify_fd, mask, device, extensions, excluded = None, watch_budget = None, threads = 0))]
    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        py: Python<'_>,
        top: &Bound<'_, PyAny>,
        inotify_fd: i32,
        mask: u32,
        device: u64,
        extensions: Vec<String>,
        excluded: Option<&Bound<'_, PyAny>>,
        watch_budget: Option<usize>,
        threads: usize,
    ) -> PyResult<Option<LiveListing>> {
        let top = path_from_py(top)?;
        let excluded = match excluded {
            Some(items) => paths_from_py("excluded", items)?,
            None => Vec::new(),
        };
        let filter = Filter::new(Some(extensions));
        let options = livelist::ListOptions {
            inotify_fd,
            mask,
            device,
            filter: &filter,
            excluded: &excluded,
            watch_budget,
            threads,
        };
        let listed = py.detach(|| livelist::list_tree(&top, &options, &self.cancel));
        Ok(listed.ok().map(|listing| LiveListing { listing }))
    }
}

/// The result of `LiveLister.list`, read in slices so that no single call holds the
/// interpreter for long.
#[pyclass(frozen, module = "scanarr._native", name = "LiveListing")]
pub struct LiveListing {
    listing: livelist::Listing,
}

/// `items[start..stop]`, both ends cut to the length first (empty when `stop <= start`).
fn clamped<T>(items: &[T], start: usize, stop: usize) -> &[T] {
    let start = start.min(items.len());
    &items[start..stop.clamp(start, items.len())]
}

fn name_to_py<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyAny> {
    // The lister keeps only UTF-8 names.
    PyString::new(py, std::str::from_utf8(name).unwrap_or("\u{fffd}")).into_any()
}

#[pymethods]
impl LiveListing {
    #[getter]
    fn gone(&self) -> bool {
        self.listing.gone
    }

    /// errno of the watch that hit the limit, 0 for the caller's budget, None when not hit.
    #[getter]
    fn watch_limit(&self) -> Option<i32> {
        self.listing.watch_limit
    }

    #[getter]
    fn dir_count(&self) -> usize {
        self.listing.dirs.len()
    }

    #[getter]
    fn file_count(&self) -> usize {
        self.listing.files.len()
    }

    /// ``(parent, name, wd, read_errno)`` of directories `start..stop`: parent -1 for the top,
    /// wd > 0 watched, 0 not watched (limit), -errno when the watch failed.
    fn dirs<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        stop: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let dirs = clamped(&self.listing.dirs, start, stop);
        PyList::new(
            py,
            dirs.iter().map(|dir| {
                let parent: i64 = if dir.parent == livelist::NO_PARENT {
                    -1
                } else {
                    i64::from(dir.parent)
                };
                let wd = match dir.watch {
                    livelist::Watch::Wd(wd) => wd,
                    livelist::Watch::Limit => 0,
                    livelist::Watch::Failed(errno) => -errno,
                };
                let name = name_to_py(py, self.listing.name(dir.name));
                (parent, name, wd, dir.read_error)
            }),
        )
    }

    /// ``(dir, name, inode, size, mtime_ns, nlink)`` of media files `start..stop`.
    fn files<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        stop: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let files = clamped(&self.listing.files, start, stop);
        PyList::new(
            py,
            files.iter().map(|file| {
                (
                    file.dir,
                    name_to_py(py, self.listing.name(file.name)),
                    file.ino,
                    file.size,
                    file.mtime_ns,
                    file.nlink,
                )
            }),
        )
    }
}

// --- the live watcher's index (rust/liveindex.rs) --------------------------------------------

fn text(name: &[u8]) -> String {
    // Only UTF-8 names are indexed (the others cannot be reported).
    String::from_utf8_lossy(name).into_owned()
}

/// The live watcher's index of its volumes (`crate::liveindex`), behind one lock: the listing
/// thread merges into it (and frees dropped volumes) with the interpreter detached, a slice at
/// a time, while the trio thread handles events.
#[pyclass(frozen, module = "scanarr._native", name = "LiveIndex")]
pub struct PyLiveIndex {
    inner: liveindex::SharedIndex,
    cancel: std::sync::atomic::AtomicBool,
    /// `owned_count` when last read: what the trio thread gets (for metrics) while a merge holds
    /// the lock, instead of waiting for it.
    owned_seen: std::sync::atomic::AtomicUsize,
}

impl PyLiveIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, liveindex::LiveIndex> {
        self.inner.lock()
    }
}

#[pymethods]
impl PyLiveIndex {
    #[new]
    #[pyo3(signature = (inotify_fd = -1))]
    fn new(inotify_fd: i32) -> PyLiveIndex {
        PyLiveIndex {
            inner: liveindex::SharedIndex::new(liveindex::LiveIndex::new(inotify_fd)),
            cancel: std::sync::atomic::AtomicBool::new(false),
            owned_seen: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    #[staticmethod]
    fn stamp(size: u64, mtime_ns: i64, nlink: u64) -> u64 {
        liveindex::stamp(size, mtime_ns, nlink)
    }

    /// Stops a `merge` or `drop_volume` running, and every later one.
    fn cancel(&self) {
        self.cancel
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn add_volume(&self, device: u64) -> (u32, u64) {
        self.lock().add_volume(device)
    }

    fn device(&self, volume: u32) -> Option<u64> {
        self.lock().device(volume)
    }

    fn root(&self, volume: u32) -> Option<u64> {
        self.lock().root(volume)
    }

    /// Frees a volume with the interpreter detached; False when cancelled.
    fn drop_volume(&self, py: Python<'_>, volume: u32) -> bool {
        py.detach(|| self.inner.drop_volume(volume, &self.cancel).is_ok())
    }

    /// Removes the watches of dropped volumes no directory took over (one syscall each), with
    /// the interpreter detached.
    fn release_dropped(&self, py: Python<'_>) {
        py.detach(|| self.inner.release_dropped());
    }

    /// Entries (listed directories and files, freed ones, dropped watches) `merge`,
    /// `drop_volume` and `release_dropped` handle per hold of the lock: what another thread
    /// waits for them at most.
    #[getter]
    fn get_slice(&self) -> usize {
        self.inner.slice()
    }

    #[setter]
    fn set_slice(&self, entries: usize) {
        self.inner.set_slice(entries);
    }

    /// The most entries one hold of the lock by `merge`, `drop_volume` or `release_dropped`
    /// handled so far (for tests and benchmarks).
    #[getter]
    fn longest_hold(&self) -> usize {
        self.inner.longest_hold()
    }

    fn watches(&self, volume: u32) -> u32 {
        self.lock().watches(volume)
    }

    fn unwatched_count(&self, volume: u32) -> usize {
        self.lock().unwatched_count(volume)
    }

    fn unwatched_tops(&self, volume: u32) -> Vec<u64> {
        self.lock().unwatched_tops(volume)
    }

    fn is_live(&self, id: u64) -> bool {
        self.lock().is_live(id)
    }

    fn parent(&self, id: u64) -> Option<u64> {
        self.lock().parent(id)
    }

    fn name(&self, id: u64) -> Option<String> {
        self.lock().name(id).map(text)
    }

    fn volume_of(&self, id: u64) -> Option<u32> {
        self.lock().volume_of(id)
    }

    fn wd(&self, id: u64) -> i32 {
        self.lock().wd(id)
    }

    fn path(&self, id: u64) -> Option<String> {
        self.lock().path(id).map(|path| text(&path))
    }

    fn is_within(&self, id: u64, ancestor: u64) -> bool {
        self.lock().is_within(id, ancestor)
    }

    fn subdir(&self, id: u64, name: &str) -> Option<u64> {
        self.lock().subdir(id, name.as_bytes())
    }

    fn subdirs(&self, id: u64) -> Vec<(String, u64)> {
        let index = self.lock();
        index
            .subdirs(id)
            .into_iter()
            .map(|(name, child)| (text(name), child))
            .collect()
    }

    fn has_subdirs(&self, id: u64) -> bool {
        self.lock().has_subdirs(id)
    }

    fn new_subdir(&self, id: u64, name: &str) -> Option<u64> {
        self.lock().new_subdir(id, name.as_bytes())
    }

    fn move_dir(&self, id: u64, parent: u64, name: &str) -> bool {
        self.lock().move_dir(id, parent, name.as_bytes())
    }

    /// Removes a directory and everything below it (their watches too); returns the media
    /// files that were under it as (path below it, inode).
    fn remove_subtree(&self, id: u64) -> Vec<(String, u64)> {
        let removed = self.lock().remove_subtree(id, true);
        removed
            .into_iter()
            .map(|(path, inode)| (text(&path), inode))
            .collect()
    }

    fn dir_of_wd(&self, wd: i32) -> Option<u64> {
        self.lock().dir_of_wd(wd)
    }

    fn set_wd(&self, id: u64, wd: i32) -> bool {
        self.lock().set_wd(id, wd)
    }

    fn dropped_by_kernel(&self, id: u64) -> i32 {
        self.lock().dropped_by_kernel(id)
    }

    fn unwatch(&self, id: u64) {
        self.lock().unwatch(id);
    }

    fn mark_unwatched(&self, id: u64) {
        self.lock().mark_unwatched(id);
    }

    fn retire(&self, wd: i32) {
        self.lock().retire(wd);
    }

    fn unretire(&self, wd: i32) -> bool {
        self.lock().unretire(wd)
    }

    fn is_retired(&self, wd: i32) -> bool {
        self.lock().is_retired(wd)
    }

    fn own(&self, wd: i32) {
        self.lock().own(wd);
    }

    fn disown(&self, wd: i32) -> bool {
        self.lock().disown(wd)
    }

    fn owns(&self, wd: i32) -> bool {
        self.lock().owns(wd)
    }

    /// Never waits: while a merge runs, the count last read.
    #[getter]
    fn owned_count(&self) -> usize {
        use std::sync::atomic::Ordering::Relaxed;
        match self.inner.try_lock() {
            Some(index) => {
                let count = index.owned_count();
                self.owned_seen.store(count, Relaxed);
                count
            }
            None => self.owned_seen.load(Relaxed),
        }
    }

    fn clear_owned(&self) {
        self.lock().clear_owned();
    }

    fn file(&self, id: u64, name: &str) -> Option<(u64, u64)> {
        self.lock().file(id, name.as_bytes())
    }

    fn files(&self, id: u64) -> Vec<(String, u64, u64)> {
        let index = self.lock();
        index
            .files(id)
            .into_iter()
            .map(|(name, inode, stamp)| (text(name), inode, stamp))
            .collect()
    }

    fn names_of(&self, id: u64, inode: u64) -> Vec<String> {
        let index = self.lock();
        index
            .files(id)
            .into_iter()
            .filter(|&(_, linked, _)| linked == inode)
            .map(|(name, _, _)| text(name))
            .collect()
    }

    fn has_files(&self, id: u64) -> bool {
        self.lock().has_files(id)
    }

    fn add_link(&self, id: u64, name: &str, inode: u64, stamp: u64) -> Option<u64> {
        self.lock().add_link(id, name.as_bytes(), inode, stamp)
    }

    fn remove_link(&self, id: u64, name: &str) -> Option<(u64, bool)> {
        self.lock().remove_link(id, name.as_bytes())
    }

    fn links(&self, device: u64, inode: u64) -> Vec<(u64, String)> {
        let index = self.lock();
        index
            .links(device, inode)
            .into_iter()
            .map(|(id, name)| (id, text(name)))
            .collect()
    }

    fn inode_stamp(&self, device: u64, inode: u64) -> Option<u64> {
        self.lock().inode_stamp(device, inode)
    }

    fn set_stamp(&self, device: u64, inode: u64, stamp: u64) {
        self.lock().set_stamp(device, inode, stamp);
    }

    #[getter]
    fn dir_count(&self) -> usize {
        self.lock().dir_count()
    }

    #[getter]
    fn file_count(&self) -> usize {
        self.lock().file_count()
    }

    #[getter]
    fn inode_count(&self) -> usize {
        self.lock().inode_count()
    }

    #[getter]
    fn heap_bytes(&self) -> usize {
        self.lock().heap_bytes()
    }

    /// Merges a listing of `top` into the index with the interpreter detached; None when
    /// cancelled.
    fn merge(
        &self,
        py: Python<'_>,
        top: u64,
        listing: Py<LiveListing>,
        report: bool,
    ) -> Option<LiveMerge> {
        let merged = {
            let listed = &listing.get().listing;
            py.detach(|| self.inner.merge(top, listed, report, &self.cancel))
        };
        merged.ok().map(|merged| LiveMerge { merged, listing })
    }
}

/// What `LiveIndex.merge` did; the media files it added are read in slices.
#[pyclass(frozen, module = "scanarr._native", name = "LiveMerge")]
pub struct LiveMerge {
    merged: liveindex::Merged,
    listing: Py<LiveListing>,
}

#[pymethods]
impl LiveMerge {
    #[getter]
    fn gone(&self) -> bool {
        self.merged.gone
    }

    #[getter]
    fn directories(&self) -> usize {
        self.merged.directories
    }

    #[getter]
    fn unwatched(&self) -> usize {
        self.merged.unwatched
    }

    #[getter]
    fn watch_limit(&self) -> Option<i32> {
        self.listing.get().listing.watch_limit
    }

    /// ``(errno, watching, directory)``: a watch (`watching`) or a read that failed.
    #[getter]
    fn errors(&self) -> Vec<(i32, bool, u64)> {
        self.merged.errors.clone()
    }

    /// ``(parent, name, holder)`` of directories already watched as `holder`, left out.
    #[getter]
    fn collisions(&self) -> Vec<(u64, String, u64)> {
        self.merged
            .collisions
            .iter()
            .map(|(parent, name, holder)| (*parent, text(name), *holder))
            .collect()
    }

    #[getter]
    fn added_count(&self) -> usize {
        self.merged.added.len()
    }

    /// ``(directory, name, inode, size, mtime_ns, nlink)`` of added media files ``start..stop``.
    fn added(&self, start: usize, stop: usize) -> Vec<(u64, String, u64, u64, i64, u64)> {
        let listing = &self.listing.get().listing;
        clamped(&self.merged.added, start, stop)
            .iter()
            .map(|&(dir, file)| {
                let file = &listing.files[file as usize];
                (
                    dir,
                    text(listing.name(file.name)),
                    file.ino,
                    file.size,
                    file.mtime_ns,
                    file.nlink,
                )
            })
            .collect()
    }
}

// --- fanotify: whole-filesystem live watching (rust/fanotify.rs) ------------------------------

fn step_name(step: crate::fanotify::Step) -> &'static str {
    use crate::fanotify::Step;
    match step {
        Step::Init => "fanotify_init",
        Step::Open => "open",
        Step::Handle => "name_to_handle_at",
        Step::Statfs => "statfs",
        Step::Mark => "fanotify_mark",
        Step::Read => "read",
    }
}

/// OSError(errno, "<syscall>: <strerror>", path): the syscall names the step that failed.
fn fanotify_error(failure: crate::fanotify::Failure, path: Option<&[u8]>) -> PyErr {
    let text = format!(
        "{}: {}",
        step_name(failure.step),
        std::io::Error::from_raw_os_error(failure.errno)
    );
    match path {
        Some(path) => PyOSError::new_err((
            failure.errno,
            text,
            String::from_utf8_lossy(path).into_owned(),
        )),
        None => PyOSError::new_err((failure.errno, text)),
    }
}

/// A fanotify group with its handle map (`crate::fanotify`): inotify-like events of the
/// directories registered. Its `fd` given to `LiveLister.list` as `inotify_fd` makes the lister
/// register directories instead of adding inotify watches.
#[pyclass(frozen, module = "scanarr._native", name = "Fanotify")]
pub struct Fanotify {
    inner: std::sync::Mutex<Option<std::sync::Arc<crate::fanotify::Fanotify>>>,
    fd: i32,
}

impl Fanotify {
    fn get(&self) -> PyResult<std::sync::Arc<crate::fanotify::Fanotify>> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err("fanotify instance closed"))
    }
}

#[pymethods]
impl Fanotify {
    /// `inotify_mask`: directories on filesystems fanotify cannot watch get an inotify watch
    /// with this mask (None: `add_watch` fails for them).
    #[new]
    #[pyo3(signature = (*, inotify_mask = None))]
    fn new(inotify_mask: Option<u32>) -> PyResult<Fanotify> {
        let inner =
            crate::fanotify::Fanotify::new(inotify_mask).map_err(|f| fanotify_error(f, None))?;
        Ok(Fanotify {
            fd: inner.fd(),
            inner: std::sync::Mutex::new(Some(inner)),
        })
    }

    #[getter]
    fn fd(&self) -> i32 {
        self.fd
    }

    /// Registers directory `path` (a final symlink is not followed); returns its key.
    fn add_watch(&self, py: Python<'_>, path: &Bound<'_, PyAny>) -> PyResult<i32> {
        let path = path_from_py(path)?;
        let c_path = std::ffi::CString::new(path.clone())
            .map_err(|_| PyValueError::new_err("embedded NUL in path"))?;
        let inner = self.get()?;
        py.detach(|| inner.watch(&c_path))
            .map_err(|f| fanotify_error(f, Some(&path)))
    }

    /// Forgets `key`; False when it was not known.
    fn remove(&self, key: i32) -> PyResult<bool> {
        Ok(self.get()?.remove(key))
    }

    /// `remove`, and the IN_IGNORED of a registered directory's key queued for the next `read`.
    fn unwatch(&self, key: i32) -> PyResult<bool> {
        Ok(self.get()?.unwatch(key))
    }

    /// Whether IN_IGNORED events of removed keys wait for `read`.
    #[getter]
    fn has_queued(&self) -> PyResult<bool> {
        Ok(self.get()?.has_queued())
    }

    #[getter]
    fn registered(&self) -> PyResult<usize> {
        Ok(self.get()?.registered())
    }

    #[getter]
    fn filesystems_marked(&self) -> PyResult<usize> {
        Ok(self.get()?.filesystems_marked())
    }

    /// ``(syscall, errno)`` of each filesystem watched through the inotify fallback.
    fn fallbacks(&self) -> PyResult<Vec<(&'static str, i32)>> {
        Ok(self
            .get()?
            .unsupported()
            .into_iter()
            .map(|f| (step_name(f.step), f.errno))
            .collect())
    }

    /// ``(key, mask, cookie, name bytes)`` of every event queued now (up to `max_bytes` read).
    #[pyo3(signature = (max_bytes = 4 << 20))]
    fn read<'py>(&self, py: Python<'py>, max_bytes: usize) -> PyResult<Bound<'py, PyList>> {
        let events = self
            .get()?
            .read(max_bytes)
            .map_err(|f| fanotify_error(f, None))?;
        PyList::new(
            py,
            events.iter().map(|event| {
                (
                    event.key,
                    event.mask,
                    event.cookie,
                    PyBytes::new(py, &event.name),
                )
            }),
        )
    }

    /// Closes the descriptors (once no listing uses them any more).
    fn close(&self) {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(inner) = taken {
            inner.unregister();
        }
    }
}

// --- WebSocket frames (rust/frames.rs) ---

fn check_heads(heads: &[String]) -> PyResult<()> {
    if let Some(head) = heads
        .iter()
        .find(|h| !(h.ends_with('{') || h.ends_with(',')))
    {
        return Err(PyValueError::new_err(format!(
            "each head must end with '{{' or ',': {head:?}"
        )));
    }
    Ok(())
}

fn mask_keys(masked: bool) -> PyResult<Option<frames::MaskKeys>> {
    if !masked {
        return Ok(None);
    }
    Ok(Some(frames::MaskKeys::from_os().map_err(|error| {
        PyOSError::new_err(format!("getrandom: {error}"))
    })?))
}

impl Batch {
    /// `heads[root_index] + fields + tail` of `file` in `text`; false (text undefined) when
    /// its relative path is not UTF-8.
    fn write_record(
        &self,
        file: &walk::FileEntry,
        heads: &[String],
        tail: &str,
        text: &mut String,
    ) -> PyResult<bool> {
        let Ok(relative_path) = std::str::from_utf8(self.batch.relative_path(file)) else {
            return Ok(false);
        };
        let head = heads.get(file.root_index as usize).ok_or_else(|| {
            PyIndexError::new_err(format!(
                "no head for root_index {} ({} heads given)",
                file.root_index,
                heads.len()
            ))
        })?;
        let filename = &relative_path[relative_path.len() - self.batch.filename(file).len()..];
        text.clear();
        text.push_str(head);
        jsonenc::write_file_fields(
            text,
            &FileFields {
                relative_path,
                filename,
                inode: file.inode,
                device_id: file.device_id,
                size_bytes: file.size_bytes,
                hardlink_count: file.hardlink_count,
                mtime_sec: file.mtime_sec,
                mtime_nsec: file.mtime_nsec,
                fingerprint: file.fingerprint,
            },
        );
        text.push_str(tail);
        Ok(true)
    }
}

/// One RFC 6455 text frame per item of `texts`, in one buffer; see `_native.pyi`.
#[pyfunction]
#[pyo3(signature = (texts, *, masked))]
fn text_frames<'py>(
    py: Python<'py>,
    texts: Vec<Bound<'py, PyString>>,
    masked: bool,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut keys = mask_keys(masked)?;
    let mut out = Vec::new();
    for text in &texts {
        let key = keys.as_mut().map(frames::MaskKeys::next_key);
        frames::push_text_frame(&mut out, text.to_str()?.as_bytes(), key);
    }
    Ok(PyBytes::new(py, &out))
}

// --- end of WebSocket frames ---

// --- name filter (rust/filter.rs) ---

/// Runs `decide` on a name as the file system holds it: `bytes` as is, `str` as UTF-8, or, when
/// it carries surrogate escapes (`os.fsdecode` of a name that is not UTF-8), as the bytes
/// `os.fsencode` gives back. A `str` that no file system could have given (a lone surrogate
/// outside the escape range) is read with U+FFFD in its place rather than raising.
fn decide_name(name: &Bound<'_, PyAny>, decide: impl FnOnce(&[u8]) -> bool) -> PyResult<bool> {
    if let Ok(text) = name.cast::<PyString>() {
        if let Ok(utf8) = text.to_str() {
            return Ok(decide(utf8.as_bytes()));
        }
        return Ok(match text.extract::<std::ffi::OsString>() {
            Ok(os) => decide(os.as_encoded_bytes()),
            Err(_) => decide(text.to_string_lossy().as_bytes()),
        });
    }
    if let Ok(bytes) = name.cast::<PyBytes>() {
        return Ok(decide(bytes.as_bytes()));
    }
    Err(PyTypeError::new_err(format!(
        "a name must be str or bytes, not {}",
        name.get_type().name()?
    )))
}

/// The walker's name filter for single names (the live watcher's events), so that a scan and
/// the watcher can never disagree on a name.
#[pyclass(frozen, module = "scanarr._native", name = "NameFilter")]
pub struct NameFilter {
    filter: Filter,
}

#[pymethods]
impl NameFilter {
    #[new]
    #[pyo3(signature = (
        extensions = Extensions::Default,
        *,
        skip_hidden = true,
        skip_temp = true,
        skip_metadata = true,
        skip_system_dirs = true,
    ))]
    #[pyo3(
        text_signature = "(extensions=..., *, skip_hidden=True, skip_temp=True, \
        skip_metadata=True, skip_system_dirs=True)"
    )]
    fn new(
        extensions: Extensions,
        skip_hidden: bool,
        skip_temp: bool,
        skip_metadata: bool,
        skip_system_dirs: bool,
    ) -> NameFilter {
        let mut filter = extensions.into_filter();
        filter.skip_hidden = skip_hidden;
        filter.skip_temp = skip_temp;
        filter.skip_metadata = skip_metadata;
        filter.skip_system_dirs = skip_system_dirs;
        NameFilter { filter }
    }

    /// The wanted extensions, lower case, without the dot, in the order given; None: every one.
    #[getter]
    fn extensions<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.filter
            .extensions()
            .map(|exts| PyTuple::new(py, exts.iter().map(|ext| String::from_utf8_lossy(ext))))
            .transpose()
    }

    fn accepts_file(&self, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        decide_name(name, |name| self.filter.accepts_file(name))
    }

    fn accepts_dir(&self, name: &Bound<'_, PyAny>) -> PyResult<bool> {
        decide_name(name, |name| self.filter.accepts_dir(name))
    }

    fn __repr__(&self) -> String {
        let f = &self.filter;
        let extensions = match f.extensions() {
            Some(exts) => format!(
                "{:?}",
                exts.iter()
                    .map(|ext| String::from_utf8_lossy(ext))
                    .collect::<Vec<_>>()
            ),
            None => "None".to_owned(),
        };
        format!(
            "NameFilter({extensions}, skip_hidden={}, skip_temp={}, skip_metadata={}, \
             skip_system_dirs={})",
            py_bool(f.skip_hidden),
            py_bool(f.skip_temp),
            py_bool(f.skip_metadata),
            py_bool(f.skip_system_dirs)
        )
    }
}

fn py_bool(value: bool) -> &'static str {
    if value {
        "True"
    } else {
        "False"
    }
}

// --- end of name filter ---

#[pymodule]
#[pyo3(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", crate::VERSION)?;
    m.add(
        "DEFAULT_EXTENSIONS",
        PyTuple::new(py, crate::DEFAULT_EXTENSIONS)?,
    )?;
    m.add("DEFAULT_SAMPLE_SIZE", crate::DEFAULT_SAMPLE_SIZE)?;
    m.add(
        "SCAN_FILE_FIELDS",
        PyTuple::new(py, jsonenc::SCAN_FILE_FIELDS)?,
    )?;
    m.add("DEFAULT_THREADS", crate::DEFAULT_THREADS)?;
    // The stub's alias exists at run time too, so `from scanarr._native import FingerprintMode`
    // works outside type checking.
    let typing = py.import("typing")?;
    let literal = typing.getattr("Literal")?;
    let modes = [literal.get_item("full")?, literal.get_item("sampled")?];
    m.add(
        "FingerprintMode",
        typing
            .getattr("Union")?
            .get_item(PyTuple::new(py, modes)?)?,
    )?;
    m.add_class::<FileRecord>()?;
    m.add_class::<WalkError>()?;
    m.add_class::<Batch>()?;
    m.add_class::<PyWalkStats>()?;
    m.add_class::<Walker>()?;
    m.add_class::<LiveLister>()?;
    m.add_class::<LiveListing>()?;
    m.add_class::<Fanotify>()?; // whole-filesystem live watching
    m.add_class::<PyLiveIndex>()?;
    m.add_class::<LiveMerge>()?;
    m.add_function(wrap_pyfunction!(fingerprint_files, m)?)?;
    m.add_function(wrap_pyfunction!(text_frames, m)?)?; // WebSocket frames
                                                        // name filter
    m.add_class::<NameFilter>()?;
    m.add(
        "TEMP_SUFFIXES",
        PyTuple::new(py, crate::filter::TEMP_SUFFIXES)?,
    )?;
    m.add(
        "METADATA_SUFFIXES",
        PyTuple::new(py, crate::filter::METADATA_SUFFIXES)?,
    )?;
    Ok(())
}
