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
    root_index: u32,
    relative_path: Box<[u8]>,
    /// Where the file name starts in `relative_path`.
    name_start: usize,
    inode: u64,
    device_id: u64,
    hardlink_count: u64,
    size_bytes: u64,
    mtime_ns: i128,
    fingerprint: Option<u128>,
    fingerprint_error: Option<String>,
}

#[pymethods]
impl FileRecord {
    #[getter]
    fn root_index(&self) -> u32 {
        self.root_index
    }
    #[getter]
    fn relative_path<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        path_to_py(py, &self.relative_path)
    }
    #[getter]
    fn filename<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        path_to_py(py, &self.relative_path[self.name_start..])
    }
    #[getter]
    fn inode(&self) -> u64 {
        self.inode
    }
    #[getter]
    fn device_id(&self) -> u64 {
        self.device_id
    }
    #[getter]
    fn hardlink_count(&self) -> u64 {
        self.hardlink_count
    }
    #[getter]
    fn size_bytes(&self) -> u64 {
        self.size_bytes
    }
    #[getter]
    fn mtime_ns(&self) -> i128 {
        self.mtime_ns
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
        let mut out = Vec::with_capacity(self.batch.files.len() * 400);
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
    #[pyo3(signature = (top, *, inotify_fd, mask, device, extensions, excluded = None, watch_budget = None))]
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
        let dirs = &self.listing.dirs;
        let range = start.min(dirs.len())..stop.min(dirs.len());
        let list = PyList::empty(py);
        for dir in &dirs[range] {
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
            let item = (parent, name, wd, dir.read_error);
            list.append(item.into_pyobject(py)?)?;
        }
        Ok(list)
    }

    /// ``(dir, name, inode, size, mtime_ns, nlink)`` of media files `start..stop`.
    fn files<'py>(
        &self,
        py: Python<'py>,
        start: usize,
        stop: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let files = &self.listing.files;
        let range = start.min(files.len())..stop.min(files.len());
        let list = PyList::empty(py);
        for file in &files[range] {
            let item = (
                file.dir,
                name_to_py(py, self.listing.name(file.name)),
                file.ino,
                file.size,
                file.mtime_ns,
                file.nlink,
            );
            list.append(item.into_pyobject(py)?)?;
        }
        Ok(list)
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
