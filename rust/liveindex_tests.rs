use super::*;
use crate::filter::Filter;
use crate::livelist::{list_tree, ListOptions};
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
    let root = std::env::temp_dir().join(format!("scanarr-liveindex-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("Film (2001)/Extras")).unwrap();
    fs::create_dir_all(root.join("Show")).unwrap();
    fs::write(root.join("Film (2001)/film.mkv"), b"film").unwrap();
    fs::write(root.join("Film (2001)/Extras/trailer.mkv"), b"t").unwrap();
    fs::hard_link(
        root.join("Film (2001)/film.mkv"),
        root.join("Show/link.mkv"),
    )
    .unwrap();
    // SAFETY: plain syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0);
    let filter = Filter::default();
    let device = fs::metadata(&root).unwrap().dev();
    let options = ListOptions {
        inotify_fd: fd,
        mask: libc::IN_CREATE | libc::IN_DELETE,
        device,
        filter: &filter,
        excluded: &[],
        watch_budget: None,
    };
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
