//! Walks of real trees in a temporary directory.

use super::*;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use xxhash_rust::xxh3::xxh3_128;

/// A scratch tree removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let dir = std::env::temp_dir().join(format!("scanarr-walk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        Tree(dir)
    }

    /// A scratch tree holding `files` (path, content).
    fn with_files(name: &str, files: &[(&str, &[u8])]) -> Tree {
        let tree = Tree::new(name);
        crate::testing::write_files(&tree.0, files);
        tree
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    fn file(&self, rel: &str, content: &[u8]) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        path
    }

    fn dir(&self, rel: &str) -> PathBuf {
        let path = self.path(rel);
        fs::create_dir_all(&path).unwrap();
        path
    }

    fn root(&self) -> Vec<u8> {
        bytes(&self.0)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        if fs::remove_dir_all(&self.0).is_err() {
            // A directory locked by a test stops a non-root user: unlock everything and retry.
            unlock(&self.0);
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

fn unlock(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            unlock(&entry.path());
        }
    }
}

fn bytes(path: &Path) -> Vec<u8> {
    path.as_os_str().as_encoded_bytes().to_vec()
}

fn mkfifo(path: &Path) {
    let c_path = sys::c_path(&bytes(path)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
}

struct Found {
    root: u32,
    path: Vec<u8>,
    name: Vec<u8>,
    entry: FileEntry,
}

#[derive(Default)]
struct Outcome {
    files: Vec<Found>,
    errors: Vec<WalkError>,
    stats: WalkStats,
    per_root: Vec<WalkStats>,
    dirs_in_batches: u64,
    largest_batch: usize,
}

impl Outcome {
    fn paths(&self) -> Vec<(u32, String)> {
        let mut paths: Vec<_> = self
            .files
            .iter()
            .map(|f| (f.root, String::from_utf8_lossy(&f.path).into_owned()))
            .collect();
        paths.sort();
        paths
    }

    /// Asserts `paths()` is `expected`.
    #[track_caller]
    fn assert_paths(&self, expected: &[(u32, &str)]) {
        let expected: Vec<(u32, String)> = expected
            .iter()
            .map(|&(root, path)| (root, path.to_owned()))
            .collect();
        assert_eq!(self.paths(), expected);
    }

    /// The sorted paths of every file, whatever its root.
    fn relative_paths(&self) -> Vec<String> {
        self.paths().into_iter().map(|(_, p)| p).collect()
    }

    /// The errors, sorted by path.
    fn errors_by_path(&self) -> Vec<WalkError> {
        let mut errors = self.errors.clone();
        errors.sort_by_key(|e| e.path.clone());
        errors
    }

    fn find(&self, rel: &str) -> &Found {
        self.files
            .iter()
            .find(|f| f.path == rel.as_bytes())
            .unwrap_or_else(|| panic!("{rel} not reported"))
    }
}

#[track_caller]
fn assert_error(error: &WalkError, kind: ErrorKind, errno: i32, path: &Path) {
    assert_eq!(error.kind, kind);
    assert_eq!(error.errno, errno);
    assert_eq!(error.path, bytes(path));
}

fn run(roots: &[Vec<u8>], options: WalkOptions) -> Outcome {
    run_hooked(roots, options, Hooks::default())
}

fn run_hooked(roots: &[Vec<u8>], options: WalkOptions, hooks: Hooks) -> Outcome {
    let walk = Walk::start_hooked(roots.to_vec(), options, hooks).unwrap();
    let mut outcome = Outcome::default();
    loop {
        match walk.next_batch(Duration::from_secs(20)) {
            Next::Batch(batch) => {
                outcome.largest_batch = outcome.largest_batch.max(batch.len());
                outcome.dirs_in_batches += batch.dirs_walked;
                for file in &batch.files {
                    outcome.files.push(Found {
                        root: file.root_index,
                        path: batch.relative_path(file).to_vec(),
                        name: batch.filename(file).to_vec(),
                        entry: file.clone(),
                    });
                }
                outcome.errors.extend(batch.errors.iter().cloned());
            }
            Next::Timeout => panic!("the walk stalled"),
            Next::Over => break,
        }
    }
    assert!(walk.is_finished());
    assert!(!walk.is_cancelled());
    outcome.stats = walk.stats();
    outcome.per_root = (0..roots.len())
        .map(|i| walk.root_stats(i).unwrap())
        .collect();
    assert!(walk.root_stats(roots.len()).is_none());
    outcome
}

/// How many entries the batches `walk` gives from now until it is over hold.
fn batched_entries(walk: &Walk) -> usize {
    let mut total = 0;
    while let Next::Batch(batch) = walk.next_batch(Duration::from_secs(20)) {
        total += batch.len();
    }
    total
}

fn with_threads(threads: usize) -> WalkOptions {
    WalkOptions {
        threads,
        ..WalkOptions::default()
    }
}

/// `threads` threads handing out batches of at most `batch_size` entries, at most
/// `max_pending_batches` of them queued for the consumer.
fn batched(threads: usize, batch_size: usize, max_pending_batches: usize) -> WalkOptions {
    WalkOptions {
        threads,
        batch_size,
        max_pending_batches,
        ..WalkOptions::default()
    }
}

/// A library with every kind of entry the filters and the walk must handle.
fn library() -> Tree {
    let name = format!("library-{:?}", std::thread::current().id());
    let tree = Tree::with_files(
        &name,
        &[
            ("Movies/a.mkv", b"aaaa"),
            ("Movies/A2.MKV", b"bb"),
            ("Movies/poster.jpg", b"jpg"),
            ("Movies/a.nfo", b"nfo"),
            ("Movies/b.mkv.part", b"partial"),
            ("Movies/.hidden.mkv", b"h"),
            ("Movies/notes.txt", b"text"),
            (".hiddendir/c.mkv", b"c"),
            ("@eaDir/d.mkv", b"d"),
            (".Trash-1000/e.mkv", b"e"),
            ("$RECYCLE.BIN/f.mkv", b"f"),
            ("TV/Show/S01/e1.mp4", b"episode"),
        ],
    );
    tree.dir("empty");
    mkfifo(&tree.path("fifo.mkv"));
    symlink(tree.path("Movies/a.mkv"), tree.path("link.mkv")).unwrap();
    symlink(tree.path("TV"), tree.path("linkdir")).unwrap();
    symlink(tree.path("nowhere"), tree.path("dangling.mkv")).unwrap();
    fs::hard_link(tree.path("Movies/a.mkv"), tree.path("hard.mkv")).unwrap();
    tree
}

#[test]
fn reports_regular_media_files_only() {
    let tree = library();
    for threads in [1, 4] {
        let out = run(&[tree.root()], with_threads(threads));
        out.assert_paths(&[
            (0, "Movies/A2.MKV"),
            (0, "Movies/a.mkv"),
            (0, "TV/Show/S01/e1.mp4"),
            (0, "hard.mkv"),
        ]);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        // root, Movies, TV, TV/Show, TV/Show/S01, empty: not the hidden or system ones.
        assert_eq!(out.stats.dirs, 6);
        assert_eq!(out.dirs_in_batches, 6);
        assert_eq!(out.stats.files, 4);
        assert_eq!(out.stats.multi_link_files, 2);
        assert_eq!(out.stats.distinct_inodes, 3);
        assert_eq!(out.stats.bytes_total, 4 + 2 + 7);
        assert_eq!(out.stats.errors, 0);
        assert_eq!(out.per_root, vec![out.stats]);
    }
}

#[test]
fn records_carry_what_lstat_says() {
    let tree = library();
    let out = run(&[tree.root()], WalkOptions::default());
    for rel in ["Movies/a.mkv", "hard.mkv", "TV/Show/S01/e1.mp4"] {
        let found = out.find(rel);
        let meta = fs::symlink_metadata(tree.path(rel)).unwrap();
        let e = &found.entry;
        assert_eq!(found.name, rel.rsplit('/').next().unwrap().as_bytes());
        assert_eq!(e.inode, meta.ino());
        assert_eq!(e.device_id, meta.dev());
        assert_eq!(e.hardlink_count, meta.nlink());
        assert_eq!(e.size_bytes, meta.size());
        assert_eq!(e.mtime_sec, meta.mtime());
        assert_eq!(i64::from(e.mtime_nsec), meta.mtime_nsec());
        assert_eq!(e.fingerprint, None);
    }
}

#[test]
fn every_regular_file_without_extension_list() {
    let tree = library();
    let options = WalkOptions {
        filter: Filter::new(None::<Vec<String>>),
        ..WalkOptions::default()
    };
    let out = run(&[tree.root()], options);
    let paths = out.relative_paths();
    assert_eq!(
        paths,
        [
            "Movies/A2.MKV",
            "Movies/a.mkv",
            "Movies/notes.txt",
            "TV/Show/S01/e1.mp4",
            "hard.mkv"
        ]
    );
}

#[test]
fn filters_can_be_turned_off() {
    let tree = library();
    let mut filter = Filter::default();
    filter.skip_hidden = false;
    filter.skip_system_dirs = false;
    let options = WalkOptions {
        filter,
        ..WalkOptions::default()
    };
    let out = run(&[tree.root()], options);
    let paths = out.relative_paths();
    for rel in [
        ".hiddendir/c.mkv",
        "@eaDir/d.mkv",
        ".Trash-1000/e.mkv",
        "$RECYCLE.BIN/f.mkv",
    ] {
        assert!(paths.contains(&rel.to_owned()), "{rel} in {paths:?}");
    }
    assert!(paths.contains(&"Movies/.hidden.mkv".to_owned()));
    assert!(!paths.iter().any(|p| p.starts_with("link")), "{paths:?}");
}

#[test]
fn nested_roots_are_excluded_from_their_parent() {
    let tree = Tree::with_files(
        "nested",
        &[
            ("lib/a.mkv", b"a"),
            ("nested/b.mkv", b"bb"),
            ("nested/deeper/c.mkv", b"ccc"),
            ("other/nested/d.mkv", b"dddd"),
            ("nestedx/e.mkv", b"e"),
        ],
    );
    let parent = tree.root();
    let nested = bytes(&tree.path("nested"));
    let mut exclude = nested.clone();
    exclude.extend_from_slice(b"/");
    let options = WalkOptions {
        exclude: vec![exclude, b"/elsewhere/entirely".to_vec()],
        threads: 3,
        ..WalkOptions::default()
    };
    let out = run(&[parent, nested], options);
    out.assert_paths(&[
        (0, "lib/a.mkv"),
        (0, "nestedx/e.mkv"),
        (0, "other/nested/d.mkv"),
        (1, "b.mkv"),
        (1, "deeper/c.mkv"),
    ]);
    // root, lib, nestedx, other, other/nested | nested, nested/deeper
    assert_eq!(out.per_root[0].dirs, 5);
    assert_eq!(out.per_root[1].dirs, 2);
    assert_eq!(out.stats.dirs, 7);
    assert_eq!(out.per_root[0].bytes_total, 1 + 4 + 1);
    assert_eq!(out.per_root[1].bytes_total, 2 + 3);
    assert_eq!(out.stats.bytes_total, 11);
}

#[test]
fn root_errors_are_reported_and_other_roots_walked() {
    let tree = Tree::new("roots");
    tree.file("ok/a.mkv", b"a");
    let not_a_dir = tree.file("file.mkv", b"f");
    let missing = tree.path("missing");
    let roots = [bytes(&missing), bytes(&not_a_dir), bytes(&tree.path("ok"))];
    let out = run(&roots, WalkOptions::default());
    out.assert_paths(&[(2, "a.mkv")]);
    let mut errors = out.errors.clone();
    errors.sort_by_key(|e| e.root_index);
    assert_eq!(errors.len(), 2);
    assert_error(&errors[0], ErrorKind::Root, libc::ENOENT, &missing);
    assert_eq!(errors[0].message, "No such file or directory (os error 2)");
    assert_eq!(errors[1].kind, ErrorKind::Root);
    assert_eq!(errors[1].errno, libc::ENOTDIR);
    assert_eq!((out.per_root[0].errors, out.per_root[0].dirs), (1, 0));
    assert_eq!((out.per_root[1].errors, out.per_root[1].dirs), (1, 0));
    assert_eq!((out.per_root[2].errors, out.per_root[2].dirs), (0, 1));
    assert_eq!(out.stats.errors, 2);
}

#[test]
fn relative_roots_resolve_against_the_working_directory() {
    let tree = Tree::new("relative");
    tree.file("a.mkv", b"a");
    // `..` segments keep the root relative without changing the process's working directory.
    let cwd = std::env::current_dir().unwrap();
    let up = "../".repeat(cwd.components().count());
    let relative = format!(
        "{up}{}",
        tree.0.display().to_string().trim_start_matches('/')
    );
    let walk = Walk::start(vec![relative.into_bytes()], WalkOptions::default()).unwrap();
    assert!(walk.roots()[0].starts_with(b"/"));
    assert_eq!(batched_entries(&walk), 1);
}

#[test]
fn names_that_are_not_utf8_keep_their_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let tree = Tree::new("bytes");
    fs::create_dir_all(tree.path("déjà")).unwrap();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.mkv");
    fs::write(tree.path("déjà").join(name), b"x").unwrap();
    let out = run(&[tree.root()], WalkOptions::default());
    assert_eq!(out.files.len(), 1);
    assert_eq!(out.files[0].path, b"d\xc3\xa9j\xc3\xa0/caf\xe9.mkv");
    assert_eq!(out.files[0].name, b"caf\xe9.mkv");
}

#[test]
fn utf8_totals_leave_out_exactly_the_files_with_a_non_utf8_path() {
    use std::os::unix::ffi::OsStrExt;
    let tree = Tree::new("utf8-totals");
    tree.file("ok/a.mkv", b"aaaa");
    // Alone under a bad name: its bytes must not be counted.
    let bad = tree
        .path("ok")
        .join(std::ffi::OsStr::from_bytes(b"b\xff.mkv"));
    fs::write(&bad, b"bbbbbbbb").unwrap();
    // A bad directory name: everything below it is left out too.
    let bad_dir = tree.path("").join(std::ffi::OsStr::from_bytes(b"d\xfe"));
    fs::create_dir_all(&bad_dir).unwrap();
    fs::write(bad_dir.join("c.mkv"), b"cc").unwrap();
    // One inode under a bad and a good name: counted once, through the good one.
    let shared = tree.file("ok/shared.mkv", b"ssssssssssssssss");
    fs::hard_link(
        &shared,
        tree.path("ok")
            .join(std::ffi::OsStr::from_bytes(b"s\xff.mkv")),
    )
    .unwrap();
    for threads in [1, 4] {
        let options = WalkOptions {
            utf8_totals: true,
            threads,
            ..WalkOptions::default()
        };
        let out = run(&[tree.root()], options);
        assert_eq!(out.files.len(), 5, "every file is still delivered");
        assert_eq!(out.stats.files, 2);
        assert_eq!(out.stats.non_utf8_files, 3);
        assert_eq!(out.stats.bytes_total, 4 + 16);
        assert_eq!(out.stats.distinct_inodes, 2);
        assert_eq!(out.per_root[0].non_utf8_files, 3);
        assert_eq!(out.per_root[0].bytes_total, 4 + 16);
    }
    let all = run(&[tree.root()], WalkOptions::default());
    assert_eq!(
        (
            all.stats.files,
            all.stats.bytes_total,
            all.stats.non_utf8_files
        ),
        (5, 4 + 8 + 2 + 16, 0)
    );
}

#[test]
fn entries_that_vanish_or_turn_into_symlinks_mid_walk() {
    let tree = Tree::with_files(
        "races",
        &[
            ("V/gone.mkv", b"g"),
            ("V/swapfile.mkv", b"s"),
            ("V/stays.mkv", b"s"),
            ("V/swapdir/x.mkv", b"x"),
        ],
    );
    let outside = Tree::new("races-outside");
    outside.file("y.mkv", b"y");
    let (v, out_dir) = (tree.path("V"), outside.0.clone());
    let fired = Arc::new(AtomicBool::new(false));
    let hook_fired = Arc::clone(&fired);
    let options = with_threads(1);
    let hooks = Hooks {
        after_listing: Some(Arc::new(move |rel: &[u8]| {
            if rel == b"V" && !hook_fired.swap(true, Ordering::SeqCst) {
                fs::remove_file(v.join("gone.mkv")).unwrap();
                fs::remove_file(v.join("swapfile.mkv")).unwrap();
                symlink(out_dir.join("y.mkv"), v.join("swapfile.mkv")).unwrap();
                fs::rename(v.join("swapdir"), out_dir.join("moved")).unwrap();
                symlink(&out_dir, v.join("swapdir")).unwrap();
            }
        })),
    };
    let out = run_hooked(&[tree.root()], options, hooks);
    assert!(fired.load(Ordering::SeqCst));
    out.assert_paths(&[(0, "V/stays.mkv")]);
    let errors = out.errors_by_path();
    assert_eq!(errors.len(), 2, "{errors:?}");
    let gone = tree.path("V/gone.mkv");
    assert_error(&errors[0], ErrorKind::Stat, libc::ENOENT, &gone);
    assert_eq!(errors[1].kind, ErrorKind::ReadDir);
    assert!(
        [libc::ELOOP, libc::ENOTDIR].contains(&errors[1].errno),
        "{:?}",
        errors[1]
    );
    assert_eq!(errors[1].path, bytes(&tree.path("V/swapdir")));
    assert_eq!(out.stats.errors, 2);
}

/// Exit status of the re-run test when the unprivileged user cannot reach the tree.
const CANNOT_REACH_TREE: i32 = 77;

/// Runs `test` as an unprivileged user: root reads every directory, so permission errors can
/// only be seen by re-running this test binary under another uid. Skipped (with a note) where
/// that user cannot run the binary or reach the temporary directory.
fn unprivileged(test_name: &str, tree: &Tree, test: impl FnOnce(&Path)) {
    if sys::euid() != 0 {
        let root = std::env::var_os("SCANARR_TEST_TREE").map_or(tree.0.clone(), PathBuf::from);
        if fs::read_dir(&root).is_err() {
            std::process::exit(CANNOT_REACH_TREE);
        }
        test(&root);
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let status = std::process::Command::new(exe)
        .args([test_name, "--exact", "--test-threads=1"])
        .env("SCANARR_TEST_TREE", &tree.0)
        .uid(65534)
        .gid(65534)
        .status();
    match status {
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("{test_name}: uid 65534 cannot run the test binary ({error}): skipped");
        }
        Ok(status) if status.code() == Some(CANNOT_REACH_TREE) => {
            eprintln!("{test_name}: uid 65534 cannot reach {:?}: skipped", tree.0);
        }
        Ok(status) => assert!(status.success(), "unprivileged run of {test_name} failed"),
        Err(error) => panic!("cannot re-run {test_name}: {error}"),
    }
}

use std::os::unix::process::CommandExt;

#[test]
fn unreadable_directories_and_files_are_errors_not_gaps() {
    let in_child = std::env::var_os("SCANARR_TEST_TREE").is_some();
    let tree = Tree::new("perm");
    if !in_child {
        tree.file("open/a.mkv", b"a");
        tree.file("locked/b.mkv", b"b");
        tree.file("secret.mkv", b"s");
        fs::set_permissions(tree.path("open"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(tree.path("open/a.mkv"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(tree.path("locked"), fs::Permissions::from_mode(0o000)).unwrap();
        fs::set_permissions(tree.path("secret.mkv"), fs::Permissions::from_mode(0o000)).unwrap();
    }
    unprivileged(
        "walk::tests::unreadable_directories_and_files_are_errors_not_gaps",
        &tree,
        |root| {
            let options = WalkOptions {
                fingerprint: Some(Spec {
                    mode: fingerprint::Mode::Full,
                    sample_size: 1,
                }),
                ..WalkOptions::default()
            };
            let out = run(&[bytes(root)], options);
            out.assert_paths(&[(0, "open/a.mkv"), (0, "secret.mkv")]);
            let secret = out.find("secret.mkv");
            assert_eq!(secret.entry.fingerprint, None);
            assert_eq!(
                secret.entry.fingerprint_error.as_deref(),
                Some("Permission denied (os error 13)")
            );
            assert_eq!(
                out.find("open/a.mkv").entry.fingerprint,
                Some(xxh3_128(b"a"))
            );
            let errors = out.errors_by_path();
            assert_eq!(errors.len(), 2, "{errors:?}");
            let (locked, secret) = (root.join("locked"), root.join("secret.mkv"));
            assert_error(&errors[0], ErrorKind::ReadDir, libc::EACCES, &locked);
            assert_error(&errors[1], ErrorKind::Fingerprint, libc::EACCES, &secret);
            // root and open; not locked
            assert_eq!(out.stats.dirs, 2);
            assert_eq!(out.stats.errors, 2);
        },
    );
}

#[test]
fn walker_fingerprints_match_their_definition() {
    let tree = Tree::new("fingerprints");
    let sample = 1024usize;
    let mut contents = Vec::new();
    for (i, len) in [0usize, 10, 2048, 2049, 100_000].into_iter().enumerate() {
        let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        tree.file(&format!("f{i}.mkv"), &data);
        contents.push((format!("f{i}.mkv"), data));
    }
    for mode in [fingerprint::Mode::Full, fingerprint::Mode::Sampled] {
        let options = WalkOptions {
            fingerprint: Some(Spec {
                mode,
                sample_size: sample as u64,
            }),
            ..WalkOptions::default()
        };
        let out = run(&[tree.root()], options);
        assert!(out.errors.is_empty());
        for (name, data) in &contents {
            let expected = match mode {
                fingerprint::Mode::Full => xxh3_128(data),
                fingerprint::Mode::Sampled => fingerprint::tests::sampled_reference(data, sample),
            };
            assert_eq!(
                out.find(name).entry.fingerprint,
                Some(expected),
                "{name} {mode:?}"
            );
        }
    }
}

/// `dirs` directories of `files` media files each, two levels deep.
fn wide_tree(name: &str, dirs: usize, files: usize) -> Tree {
    let tree = Tree::new(name);
    for d in 0..dirs {
        for f in 0..files {
            tree.file(&format!("g{}/d{d}/f{f}.mkv", d % 5), b"x");
        }
    }
    tree
}

#[test]
fn batches_stay_within_batch_size_and_add_up() {
    let tree = wide_tree("batches", 50, 7);
    for threads in [1, 3] {
        let out = run(&[tree.root()], batched(threads, 5, 1));
        assert_eq!(out.files.len(), 350);
        assert!(out.largest_batch <= 5);
        assert_eq!(out.stats.files, 350);
        // root, 5 groups, 50 leaves
        assert_eq!(out.stats.dirs, 56);
        assert_eq!(out.dirs_in_batches, 56);
    }
}

#[test]
fn a_consumer_that_stops_pulling_stops_the_walk() {
    let tree = wide_tree("backpressure", 100, 20);
    let walk = Walk::start(vec![tree.root()], batched(2, 10, 2)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Two batches queued, at most two held by each blocked thread and one partly filled.
    assert!(
        walk.stats().files <= (2 + 2 * 2 + 1) * 10,
        "{:?}",
        walk.stats()
    );
    assert_eq!(batched_entries(&walk), 2000);
}

#[test]
fn cancel_releases_threads_blocked_on_a_full_channel() {
    let tree = wide_tree("cancel", 50, 20);
    let walk = Walk::start(vec![tree.root()], batched(4, 1, 1)).unwrap();
    assert!(matches!(
        walk.next_batch(Duration::from_secs(20)),
        Next::Batch(_)
    ));
    walk.cancel();
    assert!(walk.is_cancelled());
    assert!(walk.is_finished());
    assert!(matches!(
        walk.next_batch(Duration::from_secs(20)),
        Next::Over
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while walk.threads_running() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(walk.threads_running(), 0);
}

#[test]
fn next_batch_times_out_while_the_walk_goes_on() {
    let tree = wide_tree("timeout", 3, 3);
    let walk = Walk::start(vec![tree.root()], batched(1, 1, 1)).unwrap();
    // Blocked walk, nothing consumed yet: a zero timeout still returns the queued batch.
    assert!(matches!(
        walk.next_batch(Duration::ZERO),
        Next::Batch(_) | Next::Timeout
    ));
    drop(walk);
    let empty = Walk::start(Vec::new(), WalkOptions::default()).unwrap();
    assert!(matches!(
        empty.next_batch(Duration::from_secs(20)),
        Next::Over
    ));
    assert!(empty.is_finished());
}

#[test]
fn deep_trees_do_not_run_out_of_descriptors() {
    let tree = Tree::new("deep");
    let mut rel = String::new();
    for level in 0..200 {
        rel.push_str(&format!("l{level}/"));
        if level % 50 == 49 {
            tree.file(&format!("{rel}f.mkv"), b"x");
            tree.file(&format!("{rel}side/g.mkv"), b"x");
        }
    }
    let out = run(&[tree.root()], with_threads(4));
    assert_eq!(out.files.len(), 8);
    assert_eq!(out.stats.dirs, 1 + 200 + 4);
}

/// A mount point below `/dev` (like /dev/shm or /dev/pts) whose device differs from its parent's.
fn mount_point_below_dev() -> Option<(PathBuf, PathBuf)> {
    let mounts = fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let point = PathBuf::from(line.split_whitespace().nth(1)?);
        let parent = point.parent()?.to_path_buf();
        if parent != Path::new("/dev") {
            return None;
        }
        let point_dev = fs::symlink_metadata(&point).ok()?.dev();
        let parent_dev = fs::symlink_metadata(&parent).ok()?.dev();
        (point_dev != parent_dev).then_some((parent, point))
    })
}

#[test]
fn same_device_skips_mount_points() {
    let Some((parent, point)) = mount_point_below_dev() else {
        eprintln!("no mount point below /dev: skipped");
        return;
    };
    let options = |same_device| WalkOptions {
        same_device,
        filter: Filter::new(None::<Vec<String>>),
        ..WalkOptions::default()
    };
    let staying = run(&[bytes(&parent)], options(true));
    assert!(
        staying.stats.skipped_mounts >= 1,
        "{:?} {point:?}",
        staying.stats
    );
    let crossing = run(&[bytes(&parent)], options(false));
    assert_eq!(crossing.stats.skipped_mounts, 0);
    assert!(crossing.stats.dirs > staying.stats.dirs, "{point:?}");
}
