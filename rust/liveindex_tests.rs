use super::*;
use crate::filter::Filter;
use crate::livelist::{list_tree, ListOptions};
use crate::testing::{hard_link, scratch_dir, write_files};
use std::fs;
use std::os::unix::fs::MetadataExt;

fn index_with_volume() -> (LiveIndex, u32, Id) {
    let mut index = LiveIndex::new(-1);
    let (volume, root) = index.add_volume(7);
    (index, volume, root)
}

fn path(index: &LiveIndex, id: Id) -> String {
    String::from_utf8(index.path(id).unwrap()).unwrap()
}

#[test]
fn subdirectories_are_found_by_name_and_paths_follow_parents() {
    let (mut index, _volume, root) = index_with_volume();
    let movies = index.new_subdir(root, b"Movies").unwrap();
    let film = index.new_subdir(movies, b"Film (2001)").unwrap();
    assert_eq!(
        index.new_subdir(movies, b"Film (2001)"),
        None,
        "names are unique"
    );
    assert_eq!(index.subdir(movies, b"Film (2001)"), Some(film));
    assert_eq!(index.subdir(movies, b"Other"), None);
    assert_eq!(index.parent(film), Some(movies));
    assert_eq!(index.parent(root), None);
    assert_eq!(path(&index, film), "Movies/Film (2001)");
    assert_eq!(path(&index, root), "");
    // Many siblings: the lookup table grows and still finds each one.
    let ids: Vec<Id> = (0..5000)
        .map(|n| index.new_subdir(root, format!("d{n}").as_bytes()).unwrap())
        .collect();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(index.subdir(root, format!("d{n}").as_bytes()), Some(*id));
    }
    assert_eq!(index.subdirs(root).len(), 5001);
}

#[test]
fn removed_directories_leave_stale_ids_and_report_their_files() {
    let (mut index, volume, root) = index_with_volume();
    let show = index.new_subdir(root, b"Show").unwrap();
    let season = index.new_subdir(show, b"Season 01").unwrap();
    index.add_link(show, b"pilot.mkv", 10, 1);
    index.add_link(season, b"e01.mkv", 11, 1);
    assert!(index.set_wd(season, 5));
    assert_eq!(index.watches(volume), 1);
    let mut removed = index.remove_subtree(show, true);
    removed.sort();
    assert_eq!(
        removed,
        [
            (b"Season 01/e01.mkv".to_vec(), 11),
            (b"pilot.mkv".to_vec(), 10)
        ]
    );
    assert!(!index.is_live(show) && !index.is_live(season));
    assert_eq!(index.subdir(root, b"Show"), None);
    assert_eq!(index.dir_of_wd(5), None);
    assert!(index.is_retired(5), "its IN_IGNORED is expected");
    assert_eq!(index.watches(volume), 0);
    assert_eq!(index.links(7, 11), []);
    // The slot is reused: the old id stays stale, the new one is live.
    let again = index.new_subdir(root, b"Show").unwrap();
    assert_ne!(again, show);
    assert!(
        again as u32 == season as u32 || again as u32 == show as u32,
        "a slot is reused"
    );
    assert!(index.is_live(again) && !index.is_live(show));
    assert_eq!(index.name(show), None);
    assert_eq!(index.file(show, b"pilot.mkv"), None);
    assert_eq!(index.dir_count(), 2);
    assert_eq!(index.file_count(), 0);
}

#[test]
fn moving_a_directory_renames_everything_below_it() {
    let (mut index, _volume, root) = index_with_volume();
    let a = index.new_subdir(root, b"a").unwrap();
    let b = index.new_subdir(root, b"b").unwrap();
    let film = index.new_subdir(a, b"Film").unwrap();
    let extras = index.new_subdir(film, b"Extras").unwrap();
    index.add_link(extras, b"trailer.mkv", 3, 1);
    assert!(index.move_dir(film, b, b"Film (2001)"));
    assert_eq!(path(&index, extras), "b/Film (2001)/Extras");
    assert_eq!(index.subdir(a, b"Film"), None);
    assert_eq!(index.subdir(b, b"Film (2001)"), Some(film));
    assert_eq!(index.links(7, 3), [(extras, &b"trailer.mkv"[..])]);
    assert!(!index.move_dir(b, extras, b"loop"), "not below itself");
    assert!(!index.move_dir(root, a, b"root"), "the root stays");
    let other = index.new_subdir(a, b"Film (2001)").unwrap();
    assert!(
        !index.move_dir(other, b, b"Film (2001)"),
        "the name is taken"
    );
}

#[test]
fn hard_links_are_found_from_any_directory_and_share_a_stamp() {
    let (mut index, _volume, root) = index_with_volume();
    let movies = index.new_subdir(root, b"movies").unwrap();
    let torrents = index.new_subdir(root, b"torrents").unwrap();
    assert_eq!(index.add_link(movies, b"film.mkv", 42, 100), Some(100));
    // A further link takes the inode's stamp.
    assert_eq!(index.add_link(torrents, b"film.mkv", 42, 999), Some(100));
    assert_eq!(index.add_link(torrents, b"copy.mkv", 42, 5), Some(100));
    let mut links = index.links(7, 42);
    links.sort();
    let mut expected = vec![
        (movies, &b"film.mkv"[..]),
        (torrents, &b"film.mkv"[..]),
        (torrents, &b"copy.mkv"[..]),
    ];
    expected.sort();
    assert_eq!(links, expected);
    assert_eq!(index.inode_count(), 1);
    index.set_stamp(7, 42, 200);
    assert_eq!(index.file(torrents, b"copy.mkv"), Some((42, 200)));
    assert_eq!(index.inode_stamp(7, 42), Some(200));
    // Another device: another inode.
    assert_eq!(index.links(8, 42), []);
    assert_eq!(index.remove_link(movies, b"film.mkv"), Some((42, true)));
    assert_eq!(index.remove_link(torrents, b"film.mkv"), Some((42, true)));
    assert_eq!(index.links(7, 42), [(torrents, &b"copy.mkv"[..])]);
    assert_eq!(index.remove_link(torrents, b"copy.mkv"), Some((42, false)));
    assert_eq!(index.inode_stamp(7, 42), None);
    assert_eq!(index.remove_link(torrents, b"copy.mkv"), None);
    // A name given a new inode is replaced, not duplicated.
    index.add_link(movies, b"film.mkv", 1, 1);
    index.add_link(movies, b"film.mkv", 2, 1);
    assert_eq!(index.files(movies), [(&b"film.mkv"[..], 2, 1)]);
    assert_eq!(index.links(7, 1), []);
}

#[test]
fn the_wd_table_follows_watches() {
    let (mut index, volume, root) = index_with_volume();
    let a = index.new_subdir(root, b"a").unwrap();
    let b = index.new_subdir(root, b"b").unwrap();
    index.mark_unwatched(a);
    index.mark_unwatched(b);
    assert_eq!(index.unwatched_count(volume), 2);
    assert_eq!(
        index.unwatched_tops(volume),
        Vec::<Id>::new(),
        "the root is not watched"
    );
    index.set_wd(root, 1);
    let mut tops = index.unwatched_tops(volume);
    tops.sort();
    let mut expected = vec![a, b];
    expected.sort();
    assert_eq!(tops, expected);
    index.set_wd(a, 2);
    assert_eq!(index.unwatched_count(volume), 1);
    assert_eq!(index.dir_of_wd(2), Some(a));
    assert_eq!(index.watches(volume), 2);
    // The same wd given to another directory moves.
    index.set_wd(b, 2);
    assert_eq!((index.wd(a), index.wd(b)), (0, 2));
    assert_eq!(index.watches(volume), 2);
    assert_eq!(index.dropped_by_kernel(b), 2);
    assert_eq!(index.dir_of_wd(2), None);
    assert!(!index.owns(2) && index.owns(1));
    assert_eq!(index.watches(volume), 1);
    // Thousands of watches, removed again: the table empties.
    let ids: Vec<Id> = (0..3000)
        .map(|n| {
            let id = index.new_subdir(root, format!("w{n}").as_bytes()).unwrap();
            index.set_wd(id, 100 + n);
            id
        })
        .collect();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(index.dir_of_wd(100 + n as i32), Some(*id));
    }
    for id in &ids {
        index.unwatch(*id);
    }
    assert_eq!(index.watches(volume), 1);
    assert_eq!(index.dir_of_wd(150), None);
    assert!(index.is_retired(150));
}

#[test]
fn a_dropped_volume_keeps_watches_another_takes_over() {
    let (mut index, volume, root) = index_with_volume();
    let a = index.new_subdir(root, b"a").unwrap();
    index.set_wd(root, 1);
    index.set_wd(a, 2);
    index.add_link(a, b"x.mkv", 9, 1);
    index.drop_volume(volume, &AtomicBool::new(false)).unwrap();
    assert!(!index.is_live(root) && !index.is_live(a));
    assert_eq!(index.links(7, 9), []);
    let (_again, root2) = index.add_volume(7);
    index.set_wd(root2, 1); // the same directory listed again: the same wd
    index.release_dropped();
    assert!(index.owns(1) && !index.is_retired(1));
    assert!(index.is_retired(2) && !index.owns(2));
    assert_eq!(index.dir_count(), 1);
}

#[test]
fn names_are_compacted_once_half_is_garbage() {
    let (mut index, _volume, root) = index_with_volume();
    let keep = index.new_subdir(root, b"keep").unwrap();
    index.add_link(keep, b"kept.mkv", 1, 1);
    for round in 0..3 {
        let dir = index.new_subdir(root, b"churn").unwrap();
        for n in 0..5000 {
            index.add_link(
                dir,
                format!("file number {n} of round {round}.mkv").as_bytes(),
                10 + n,
                1,
            );
        }
        index.remove_subtree(dir, false);
    }
    assert!(index.names.len() < 100_000, "{}", index.names.len());
    assert_eq!(index.file(keep, b"kept.mkv"), Some((1, 1)));
    assert_eq!(index.name(keep), Some(&b"keep"[..]));
}

#[test]
fn a_listing_is_merged_with_its_watches_links_and_collisions() {
    let root = scratch_dir("liveindex");
    fs::create_dir_all(root.join("Show")).unwrap();
    write_files(
        &root,
        &[
            ("Film (2001)/film.mkv", b"film"),
            ("Film (2001)/Extras/trailer.mkv", b"t"),
        ],
    );
    hard_link(&root, "Film (2001)/film.mkv", "Show/link.mkv");
    // SAFETY: plain syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let filter = Filter::default();
    let device = fs::metadata(&root).unwrap().dev();
    let options = ListOptions::new(fd, libc::IN_CREATE | libc::IN_DELETE, device, &filter);
    let top = root.as_os_str().as_encoded_bytes();
    let listing = list_tree(top, &options, &AtomicBool::new(false)).unwrap();
    let mut index = LiveIndex::new(fd);
    let (volume, vroot) = index.add_volume(device);
    let merged = index
        .merge(vroot, &listing, false, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(merged.directories, 4);
    assert!(merged.added.is_empty(), "silent");
    assert_eq!(index.watches(volume), 4);
    assert_eq!(index.file_count(), 3);
    let film = index.subdir(vroot, b"Film (2001)").unwrap();
    let show = index.subdir(vroot, b"Show").unwrap();
    let ino = fs::metadata(root.join("Show/link.mkv")).unwrap().ino();
    let mut links = index.links(device, ino);
    links.sort();
    let mut expected = vec![(film, &b"film.mkv"[..]), (show, &b"link.mkv"[..])];
    expected.sort();
    assert_eq!(links, expected);
    let meta = fs::metadata(root.join("Show/link.mkv")).unwrap();
    let expected_stamp = stamp(
        meta.size(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.nlink(),
    );
    assert_eq!(index.inode_stamp(device, ino), Some(expected_stamp));
    // The same tree listed again into a new directory: every watch is already another
    // directory's, so the top collides and nothing is merged.
    let elsewhere = index.new_subdir(film, b"again").unwrap();
    let listing = list_tree(
        root.join("Show").as_os_str().as_encoded_bytes(),
        &options,
        &AtomicBool::new(false),
    )
    .unwrap();
    let merged = index
        .merge(elsewhere, &listing, true, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(merged.collisions, [(film, b"again".to_vec(), show)]);
    assert!(!index.is_live(elsewhere));
    assert_eq!(index.links(device, ino).len(), 2);
    // A reported listing names the files it added.
    index.remove_subtree(show, false);
    let fresh = index.new_subdir(vroot, b"Show").unwrap();
    let merged = index
        .merge(fresh, &listing, true, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(merged.added, [(fresh, 0)]);
    assert_eq!(index.file(fresh, b"link.mkv").map(|f| f.0), Some(ino));
    // A cancelled listing, a gone top.
    fs::remove_dir_all(&root).unwrap();
    let gone = list_tree(top, &options, &AtomicBool::new(false)).unwrap();
    let merged = index
        .merge(fresh, &gone, true, &AtomicBool::new(false))
        .unwrap();
    assert!(merged.gone && !index.is_live(fresh));
    // SAFETY: we own the descriptor.
    unsafe { libc::close(fd) };
}

// --- merges and drops a slice at a time ---------------------------------------------------

use crate::livelist::{ListedDir, ListedFile, Name};

/// A generated listing: `shows` shows of `seasons` seasons of `episodes` media files each (and
/// a poster per show), every directory watched (wd from `first_wd` on).
fn generated(shows: usize, seasons: usize, episodes: usize, first_wd: i32) -> Listing {
    let mut listing = Listing::default();
    let name = |listing: &mut Listing, text: String| {
        let start = listing.names.len() as u32;
        listing.names.extend_from_slice(text.as_bytes());
        Name {
            start,
            len: text.len() as u32,
        }
    };
    let mut wd = first_wd;
    let mut dir = |listing: &mut Listing, parent: u32, name: Name| {
        listing.dirs.push(ListedDir {
            parent,
            name,
            watch: Watch::Wd(wd),
            read_error: 0,
        });
        wd += 1;
        (listing.dirs.len() - 1) as u32
    };
    let mut ino = 1000u64;
    let mut file = |listing: &mut Listing, dir: u32, name: Name| {
        ino += 1;
        listing.files.push(ListedFile {
            dir,
            name,
            ino,
            size: ino * 3,
            mtime_ns: 7,
            nlink: 1,
        });
    };
    let top = dir(&mut listing, NO_PARENT, Name::default());
    for show in 0..shows {
        let n = name(&mut listing, format!("Show {show}"));
        let show_dir = dir(&mut listing, top, n);
        let n = name(&mut listing, "poster.mkv".to_string());
        file(&mut listing, show_dir, n);
        for season in 0..seasons {
            let n = name(&mut listing, format!("Season {season:02}"));
            let season_dir = dir(&mut listing, show_dir, n);
            for episode in 0..episodes {
                let n = name(&mut listing, format!("s{season:02}e{episode:02}.mkv"));
                file(&mut listing, season_dir, n);
            }
        }
    }
    listing
}

/// Everything the index knows below `top`, as sorted lines (paths, watches, files, links).
fn dump(index: &LiveIndex, volume: u32, top: Id) -> Vec<String> {
    let mut lines = vec![format!(
        "dirs={} files={} inodes={} watches={} unwatched={}",
        index.dir_count(),
        index.file_count(),
        index.inode_count(),
        index.watches(volume),
        index.unwatched_count(volume)
    )];
    let mut stack = vec![top];
    while let Some(id) = stack.pop() {
        let at = path(index, id);
        lines.push(format!(
            "{at}/ wd={} owned={}",
            index.wd(id),
            index.owns(index.wd(id))
        ));
        for (name, inode, stamp) in index.files(id) {
            let links = index.links(7, inode).len();
            let name = String::from_utf8_lossy(name);
            lines.push(format!(
                "{at}/{name} ino={inode} stamp={stamp} links={links}"
            ));
        }
        stack.extend(index.subdirs(id).into_iter().map(|(_, child)| child));
    }
    lines.sort();
    lines
}

/// Steps `job` until done with `budget` entries per step; returns the steps and the most
/// entries one step handled.
fn run_merge(
    index: &mut LiveIndex,
    job: &mut MergeJob,
    listing: &Listing,
    budget: usize,
) -> (usize, usize) {
    let (mut steps, mut most) = (0, 0);
    while !job.done() {
        most = most.max(index.merge_step(job, listing, budget));
        steps += 1;
    }
    (steps, most)
}

#[test]
fn a_merge_in_slices_equals_the_merge_in_one_call() {
    let listing = generated(40, 3, 5, 10);
    let entries = listing.dirs.len() + listing.files.len();
    let (mut whole, volume, root) = index_with_volume();
    let merged = whole
        .merge(root, &listing, false, &AtomicBool::new(false))
        .unwrap();
    let expected = dump(&whole, volume, root);
    assert_eq!(merged.directories, listing.dirs.len());
    assert_eq!(whole.file_count(), listing.files.len());
    for budget in [1, 7, 100, entries] {
        let (mut index, volume, root) = index_with_volume();
        let mut job = index.merge_start(root, &listing, false);
        let (steps, most) = run_merge(&mut index, &mut job, &listing, budget);
        assert!(most <= budget, "{most} entries in one step of {budget}");
        assert_eq!(steps, entries.div_ceil(budget), "budget {budget}");
        assert_eq!(dump(&index, volume, root), expected, "budget {budget}");
        assert_eq!(job.merged.directories, merged.directories);
    }
    // Reported: the same files named as added, in the same order.
    let (mut index, _volume, root) = index_with_volume();
    let mut job = index.merge_start(root, &listing, true);
    run_merge(&mut index, &mut job, &listing, 13);
    let (mut whole, _volume, root) = index_with_volume();
    let merged = whole
        .merge(root, &listing, true, &AtomicBool::new(false))
        .unwrap();
    assert_eq!(job.merged.added, merged.added);
    assert_eq!(merged.added.len(), listing.files.len());
}

/// A fresh volume with `listing` merged into it in one call, as reference for merges in slices;
/// returns the index and the volume's root.
fn merged_whole(listing: &Listing) -> (LiveIndex, Id) {
    let (mut whole, _volume, root) = index_with_volume();
    whole
        .merge(root, listing, false, &AtomicBool::new(false))
        .unwrap();
    (whole, root)
}

/// Merges a listing of 3 shows of 2 seasons of 4 episodes into a fresh volume until `show`
/// ("Show 1") and its first season are merged, nothing below the season yet; returns the
/// listing, the index, the volume, its root, `show` and the job.
fn merged_up_to_a_season() -> (Listing, LiveIndex, u32, Id, Id, MergeJob) {
    let listing = generated(3, 2, 4, 10);
    let (mut index, volume, root) = index_with_volume();
    let mut job = index.merge_start(root, &listing, false);
    // Dirs in listing order: top, Show 0, its 2 seasons, Show 1, its first season...
    index.merge_step(&mut job, &listing, 6);
    let show = index.subdir(root, b"Show 1").unwrap();
    assert!(index.subdir(show, b"Season 00").is_some());
    assert!(index.subdir(show, b"Season 01").is_none(), "not merged yet");
    assert_eq!(index.file_count(), 0, "no file merged yet");
    (listing, index, volume, root, show, job)
}

#[test]
fn a_directory_removed_between_slices_takes_its_listing_out_of_the_merge() {
    let (listing, mut index, volume, root, show, mut job) = merged_up_to_a_season();
    let season = index.subdir(show, b"Season 00").unwrap();
    let season_wd = index.wd(season);
    // Its IN_DELETE handled between two slices.
    index.remove_subtree(show, true);
    assert!(index.is_retired(season_wd), "its watch removed");
    run_merge(&mut index, &mut job, &listing, 5);
    // As if merged whole, then removed: nothing of it comes back, the rest is all there.
    let (mut whole, whole_root) = merged_whole(&listing);
    let whole_show = whole.subdir(whole_root, b"Show 1").unwrap();
    whole.remove_subtree(whole_show, true);
    assert_eq!(index.subdir(root, b"Show 1"), None);
    assert_eq!(dump(&index, volume, root), dump(&whole, volume, whole_root));
    assert_eq!(index.file_count(), 2 * (1 + 2 * 4));
}

#[test]
fn a_directory_moved_between_slices_gets_the_rest_of_its_listing_where_it_is() {
    let (listing, mut index, volume, root, show, mut job) = merged_up_to_a_season();
    let other = index.subdir(root, b"Show 0").unwrap();
    // Its IN_MOVED_FROM/IN_MOVED_TO handled between two slices: Show 1 → Show 0/Spin-off.
    assert!(index.move_dir(show, other, b"Spin-off"));
    run_merge(&mut index, &mut job, &listing, 5);
    let (mut whole, whole_root) = merged_whole(&listing);
    let whole_show = whole.subdir(whole_root, b"Show 1").unwrap();
    let whole_other = whole.subdir(whole_root, b"Show 0").unwrap();
    assert!(whole.move_dir(whole_show, whole_other, b"Spin-off"));
    assert_eq!(dump(&index, volume, root), dump(&whole, volume, whole_root));
    assert_eq!(path(&index, show), "Show 0/Spin-off");
    assert_eq!(
        index.files(index.subdir(show, b"Season 01").unwrap()).len(),
        4,
        "merged below its new place"
    );
}

#[test]
fn a_directory_created_between_slices_under_a_listed_name_is_merged_into() {
    let (listing, mut index, volume, root, show, mut job) = merged_up_to_a_season();
    // Its IN_CREATE handled between two slices (it is in the listing too: created after its
    // parent's watch, before its parent was read).
    let created = index.new_subdir(show, b"Season 01").unwrap();
    run_merge(&mut index, &mut job, &listing, 5);
    assert_eq!(
        index.subdir(show, b"Season 01"),
        Some(created),
        "one directory"
    );
    let (whole, whole_root) = merged_whole(&listing);
    assert_eq!(dump(&index, volume, root), dump(&whole, volume, whole_root));
}

#[test]
fn a_file_created_between_slices_in_a_directory_the_merge_made_is_one_file() {
    let (listing, mut index, _volume, _root, show, mut job) = merged_up_to_a_season();
    let season = index.subdir(show, b"Season 00").unwrap();
    // Its IN_CLOSE_WRITE handled between two slices, in a directory this merge created (whose
    // names the merge otherwise adds without a lookup); the listing has it too.
    index.add_link(season, b"s00e01.mkv", 5000, 9);
    index.add_link(show, b"poster.mkv", 5001, 9);
    run_merge(&mut index, &mut job, &listing, 5);
    let names = |index: &LiveIndex, dir: Id| {
        let mut names: Vec<Vec<u8>> = index.files(dir).iter().map(|f| f.0.to_vec()).collect();
        names.sort();
        names
    };
    let episodes: Vec<Vec<u8>> = (0..4)
        .map(|e| format!("s00e{e:02}.mkv").into_bytes())
        .collect();
    assert_eq!(names(&index, season), episodes, "each name once");
    assert_eq!(names(&index, show), vec![b"poster.mkv".to_vec()]);
    assert_eq!(index.file_count(), 3 * (1 + 2 * 4));
}

#[test]
fn a_merge_left_alone_adds_every_listed_name_once() {
    // No event between the slices: the names of directories the merge made go in unlooked-up,
    // and the index is the one a merge in one call makes.
    let listing = generated(4, 3, 5, 10);
    let (mut index, volume, root) = index_with_volume();
    let mut job = index.merge_start(root, &listing, false);
    run_merge(&mut index, &mut job, &listing, 3);
    let (whole, whole_root) = merged_whole(&listing);
    assert_eq!(dump(&index, volume, root), dump(&whole, volume, whole_root));
    assert_eq!(index.file_count(), 4 * (1 + 3 * 5));
    assert_eq!(index.dir_count(), 1 + 4 * (1 + 3));
}

#[test]
fn a_top_removed_between_slices_ends_the_merge() {
    let listing = generated(3, 2, 4, 10);
    let (mut index, volume, root) = index_with_volume();
    let top = index.new_subdir(root, b"Moved in").unwrap();
    let mut job = index.merge_start(top, &listing, true);
    index.merge_step(&mut job, &listing, 4);
    index.remove_subtree(top, true);
    run_merge(&mut index, &mut job, &listing, 4);
    assert!(job.merged.added.is_empty());
    assert_eq!(index.dir_count(), 1, "only the root left");
    assert_eq!((index.file_count(), index.inode_count()), (0, 0));
    assert_eq!(index.watches(volume), 0);
    // A top removed before the merge starts: gone.
    let job = index.merge_start(top, &listing, true);
    assert!(job.done() && job.merged.gone);
}

#[test]
fn a_volume_dropped_in_slices_leaves_nothing_and_its_watches_to_release() {
    let listing = generated(30, 2, 50, 10);
    let (mut index, volume, root) = index_with_volume();
    index
        .merge(root, &listing, false, &AtomicBool::new(false))
        .unwrap();
    let (other, other_root) = index.add_volume(7);
    let film = index.new_subdir(other_root, b"Film").unwrap();
    index.add_link(film, b"film.mkv", 1001, 5); // a link of the dropped volume's first file
    let mut job = index.drop_start(volume);
    let mut most = 0;
    let mut steps = 0;
    while !job.done() {
        most = most.max(index.drop_step(&mut job, 64));
        steps += 1;
        if steps == 3 {
            // Between two steps: another volume listed takes over the watch of a directory
            // not freed yet (the same directory, reached from the other volume).
            let wd = 10 + listing.dirs.len() as i32 - 1;
            assert!(index.dir_of_wd(wd).is_some(), "not freed yet");
            index.set_wd(film, wd);
        }
    }
    assert!(most <= 64, "{most}");
    assert!(steps > (listing.dirs.len() + listing.files.len()) / 64);
    assert!(!index.is_live(root) && index.root(volume).is_none());
    assert_eq!(index.dir_count(), 2);
    assert_eq!(
        index.links(7, 1001).len(),
        1,
        "the other volume's link kept"
    );
    let kept = index.wd(film);
    index.release_dropped();
    assert!(index.owns(kept) && !index.is_retired(kept));
    assert_eq!(index.owned_count(), 1, "every other watch released");
    assert_eq!(index.watches(other), 1);
}

#[test]
fn another_thread_waits_for_at_most_one_slice_of_a_merge_or_a_drop() {
    let listing = generated(2000, 4, 12, 10);
    let entries = listing.dirs.len() + listing.files.len();
    let (index, volume, root) = index_with_volume();
    let shared = SharedIndex::new(index);
    shared.set_slice(1000);
    let done = AtomicBool::new(false);
    let never = AtomicBool::new(false);
    let (waits, intermediate) = std::thread::scope(|scope| {
        let observer = scope.spawn(|| {
            // The event thread: takes the lock again and again, as events come.
            let (mut longest, mut intermediate) = (0, 0);
            while !done.load(Ordering::SeqCst) {
                let (index, waited) = shared.lock_counted();
                longest = longest.max(waited);
                if index.file_count() > 0 && index.file_count() < listing.files.len() {
                    intermediate += 1;
                }
                drop(index);
                std::thread::sleep(std::time::Duration::from_micros(50));
            }
            (longest, intermediate)
        });
        shared.merge(root, &listing, false, &never).unwrap();
        shared.drop_volume(volume, &never).unwrap();
        done.store(true, Ordering::SeqCst);
        observer.join().unwrap()
    });
    assert!(waits <= 1000, "waited for {waits} entries of {entries}");
    assert!(shared.longest_hold() <= 1000, "{}", shared.longest_hold());
    assert!(intermediate > 0, "the lock was taken between slices");
    let index = shared.lock();
    assert_eq!((index.dir_count(), index.file_count()), (0, 0));
    assert_eq!(
        index.owned_count(),
        listing.dirs.len(),
        "watches wait for release"
    );
    drop(index);
    shared.release_dropped();
    assert_eq!(shared.lock().owned_count(), 0);
}
