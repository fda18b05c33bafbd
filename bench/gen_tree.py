"""Generate a realistic media-library tree for scan benchmarks.

    python bench/gen_tree.py DEST --movies 20000 [--seed N] [--hardlink-share 0.3] [--size-mib N]

Layout (what an *arr stack on a NAS looks like)::

    DEST/media/movies/<Title (Year)>/<Title.Year.1080p.BluRay.x264-GROUP>.mkv   + .nfo .jpg .srt
    DEST/media/movies/<Title (Year)>/@eaDir/<file>/SYNOVIDEO_VIDEO_SCREENSHOT.jpg    (Synology)
    DEST/media/tv/<Show (Year)>/Season NN/<Show.SxxEyy...>.mkv                      (depth)
    DEST/torrents/<release>/<release>.mkv          hardlink of a share of the movies
    DEST/links/<tracker>/<release>.mkv             cross-seed hardlinks (a third link)
    DEST/links/symlinks/...                        symlinks, never followed by a scan

plus hidden files and directories, AppleDouble ``._`` twins, ``.part``/``.!qB`` downloads,
``.Trash-1000``, ``$RECYCLE.BIN`` and ``System Volume Information`` holding media files that a
scan must skip. Media files are sparse: truncated to a realistic size with a few kilobytes of
seed-derived bytes at head and tail, so fingerprints differ and a million files fit on a laptop.

The tree is deterministic for a seed. When it is complete, ``DEST/.gen_tree.json`` records the
parameters, the counts, and the summary a scan with the default filters must report (the file is
hidden, so scans skip it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scanarr import _native

MANIFEST_NAME = ".gen_tree.json"
GiB = 1 << 30
MiB = 1 << 20
SAMPLE_BYTES = 4096  # real bytes written at head and at tail of every media file
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
EPOCH_2008 = 1_199_145_600
EPOCH_2025 = 1_735_689_600


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


ADJECTIVES = words(
    "Silent Dark Lost Broken Golden Hidden Last Final Crimson Frozen Burning Eternal Wild Quiet "
    "Savage Secret Bitter Endless Distant Hollow Iron Midnight Northern Pale Restless Scarlet "
    "Shattered Sleeping Stolen Sweet Twisted Velvet Wicked Young Ancient Electric Fallen Forgotten "
    "Gentle Grand Lonely Lucky Mad Perfect Rising Rogue Royal Sacred Shadow Strange Sunken Winter "
    "Blue Red Black White Little Big Brave Cold"
)
NOUNS = words(
    "River Empire Garden Storm Heart Mountain City Night Road Kingdom Horizon Mirror Station "
    "Island Harbor Forest Machine Voyage Shadow Frontier Signal Legacy Protocol Promise "
    "Witness Stranger Summer Fortune Orchard Desert Highway Ocean Hunter Soldier "
    "Widow Dancer Pilot Thief Prophet "
    "Detective Doctor Teacher Captain Queen King Son Daughter Sister Brother Lighthouse Circus "
    "Carnival Cathedral Labyrinth Bridge Tower Canyon Valley Glacier Comet Planet Galaxy Orbit "
    "Echo Memory Dream Secret Code Game Deal Heist Escape Return Revenge Rebellion Silence Requiem"
)
ACCENTED = words(
    "Amélie Café Noël Señor Größe Østland Ça Élan Fiancée Déjà Vu Mañana Über Straße Zoë Björk "
    "Søren Ångström Crème Brûlée 東京 物語 Москва Ελλάδα"
)
PATTERNS = (
    "The {a} {n}",
    "{a} {n}",
    "The {n}",
    "{n} of the {n2}",
    "The {n} and the {n2}",
    "A {a} {n}",
    "{n}'s {n2}",
    "{a} {n} & {n2}",
    "{n}, {a} {n2}",
)
QUALITIES = (  # (name, share, min GiB, max GiB)
    ("2160p", 0.15, 15.0, 60.0),
    ("1080p", 0.55, 4.0, 20.0),
    ("720p", 0.22, 1.0, 6.0),
    ("480p", 0.08, 0.7, 2.0),
)
SOURCES = ("BluRay", "WEB-DL", "WEBRip", "HDTV", "BDRip", "DVDRip", "Remux")
CODECS = ("x264", "x265", "H.264", "HEVC", "AV1", "XviD")
GROUPS = ("SPARKS", "GECKOS", "FLUX", "NTb", "RARBG", "YIFY", "AMIABLE", "DON", "CtrlHD", "EVO")
EXTENSIONS = (  # (extension, share): mostly mkv, some other cases and containers
    ("mkv", 0.80),
    ("mp4", 0.09),
    ("avi", 0.04),
    ("m4v", 0.02),
    ("MKV", 0.02),
    ("Mp4", 0.01),
    ("ts", 0.01),
    ("wmv", 0.01),
)
TRACKERS = ("tracker-a", "tracker-b", "tracker-c")
MEDIA_EXTENSIONS = frozenset(_native.DEFAULT_EXTENSIONS)


@dataclass
class Counts:
    """What the generator created, and the summary a default-filter scan of DEST must report."""

    directories: int = 0  # created under DEST (DEST itself not included)
    files: int = 0  # regular-file directory entries, hardlinks included
    hardlinks: int = 0  # extra names of an existing file (included in `files`)
    symlinks: int = 0
    movies: int = 0
    episodes: int = 0
    expected_media_files: int = 0
    expected_directories: int = 1  # directories a scan walks: DEST plus every non-skipped one
    expected_total_bytes: int = 0
    expected_distinct_inodes: int = 0
    expected_multi_link_files: int = 0
    apparent_bytes: int = 0  # sum of the sizes of every regular file (sparse: not disk usage)


@dataclass
class Inode:
    size: int
    links: int = 1
    media_entries: int = 0  # names of this inode that a default-filter scan reports


@dataclass
class Builder:
    """Creates entries relative to directory file descriptors and keeps the counts."""

    rng: random.Random
    media_size: int | None  # fixed size for every media file, else realistic sizes
    counts: Counts = field(default_factory=Counts)
    inodes: list[Inode] = field(default_factory=list)

    @contextlib.contextmanager
    def directory(self, parent_fd: int, name: str, *, walked: bool) -> Iterator[int]:
        """`mkdir` for a `with` block: the descriptor is closed when the block is left."""
        fd = self.mkdir(parent_fd, name, walked=walked)
        try:
            yield fd
        finally:
            os.close(fd)

    def mkdir(self, parent_fd: int, name: str, *, walked: bool) -> int:
        """Create directory `name` and return an open descriptor; `walked`: a scan enters it."""
        os.mkdir(name, 0o755, dir_fd=parent_fd)
        self.counts.directories += 1
        if walked:
            self.counts.expected_directories += 1
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)

    def file(
        self,
        dir_fd: int,
        name: str,
        *,
        size: int,
        head: bytes,
        tail: bytes = b"",
        mtime_ns: int,
        walked: bool,
    ) -> int:
        """Create a (sparse when larger than its content) file; return its inode index."""
        fd = os.open(name, FILE_FLAGS, 0o644, dir_fd=dir_fd)
        try:
            if head:
                os.write(fd, head)
            if size > len(head):
                os.ftruncate(fd, size)
                if tail:
                    os.pwrite(fd, tail, size - len(tail))
            os.utime(fd, ns=(mtime_ns, mtime_ns))
        finally:
            os.close(fd)
        self.counts.files += 1
        self.counts.apparent_bytes += size
        self.inodes.append(Inode(size))
        index = len(self.inodes) - 1
        if walked and is_media_name(name):
            self.inodes[index].media_entries += 1
        return index

    def media(self, dir_fd: int, name: str, *, size: int, walked: bool) -> int:
        if self.media_size is not None:
            size = self.media_size
        size = max(size, 2 * SAMPLE_BYTES)
        return self.file(
            dir_fd,
            name,
            size=size,
            head=self.rng.randbytes(SAMPLE_BYTES),
            tail=self.rng.randbytes(SAMPLE_BYTES),
            mtime_ns=self.mtime_ns(),
            walked=walked,
        )

    def small(self, dir_fd: int, name: str, content: bytes, *, size: int = 0) -> None:
        """A companion file (nfo, jpg, srt...): real `content`, sparse up to `size`."""
        self.file(
            dir_fd,
            name,
            size=max(size, len(content)),
            head=content,
            mtime_ns=self.mtime_ns(),
            walked=True,
        )

    def link(
        self, inode: int, src_fd: int, src: str, dst_fd: int, dst: str, *, walked: bool
    ) -> None:
        os.link(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False)
        self.counts.files += 1
        self.counts.hardlinks += 1
        self.inodes[inode].links += 1
        if walked and is_media_name(dst):
            self.inodes[inode].media_entries += 1

    def symlink(self, target: str, dir_fd: int, name: str) -> None:
        os.symlink(target, name, dir_fd=dir_fd)
        self.counts.symlinks += 1

    def mtime_ns(self) -> int:
        seconds = self.rng.randrange(EPOCH_2008, EPOCH_2025)
        # A quarter of the files have whole-second mtimes (as after a copy with `cp -p` to FAT).
        fraction = 0 if self.rng.random() < 0.25 else self.rng.randrange(1_000_000_000)
        return seconds * 1_000_000_000 + fraction

    def finish(self) -> Counts:
        counts = self.counts
        for inode in self.inodes:
            if inode.media_entries:
                counts.expected_media_files += inode.media_entries
                counts.expected_total_bytes += inode.size
                counts.expected_distinct_inodes += 1
                if inode.links > 1:
                    counts.expected_multi_link_files += inode.media_entries
        return counts


def is_media_name(name: str) -> bool:
    """The default scan filter for a file in a walked directory."""
    if name.startswith("."):
        return False
    _, dot, extension = name.rpartition(".")
    return bool(dot) and extension.lower() in MEDIA_EXTENSIONS


def pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    roll = rng.random()
    for value, share in weighted:
        roll -= share
        if roll < 0:
            return value
    return weighted[-1][0]


@dataclass
class Release:
    title: str
    year: int
    quality: str
    size: int
    extension: str

    @property
    def folder(self) -> str:
        return f"{self.title} ({self.year})"

    def release_name(self, rng: random.Random) -> str:
        dotted = ".".join(self.title.replace("&", "and").replace(",", "").split())
        source = rng.choice(SOURCES)
        codec = rng.choice(CODECS)
        return f"{dotted}.{self.year}.{self.quality}.{source}.{codec}-{rng.choice(GROUPS)}"


class TreeGenerator:
    def __init__(self, dest: Path, *, seed: int, hardlink_share: float, size_mib: int | None):
        self.dest = dest
        self.rng = random.Random(seed)
        self.hardlink_share = hardlink_share
        self.builder = Builder(self.rng, None if size_mib is None else size_mib * MiB)
        self.titles: set[str] = set()

    def title(self) -> tuple[str, int]:
        rng = self.rng
        while True:
            if rng.random() < 0.03:
                title = f"{rng.choice(ACCENTED)} {rng.choice(NOUNS)}"
            else:
                title = rng.choice(PATTERNS).format(
                    a=rng.choice(ADJECTIVES), n=rng.choice(NOUNS), n2=rng.choice(NOUNS)
                )
            year = rng.randrange(1950, 2025)
            sequel = 1
            candidate = title
            while f"{candidate} ({year})" in self.titles:
                sequel += 1
                candidate = f"{title} {sequel}"
            self.titles.add(f"{candidate} ({year})")
            return candidate, year

    def release(self) -> Release:
        rng = self.rng
        title, year = self.title()
        roll = rng.random()
        chosen = QUALITIES[-1]
        for option in QUALITIES:
            roll -= option[1]
            if roll < 0:
                chosen = option
                break
        quality, _, low, high = chosen
        size = int(rng.uniform(low, high) * GiB)
        return Release(title, year, quality, size, pick(rng, EXTENSIONS))

    def generate(self, movies: int) -> Counts:
        b = self.builder
        self.dest.mkdir(parents=True, exist_ok=True)
        dest_fd = os.open(self.dest, DIR_FLAGS)
        try:
            media_fd = b.mkdir(dest_fd, "media", walked=True)
            movies_fd = b.mkdir(media_fd, "movies", walked=True)
            tv_fd = b.mkdir(media_fd, "tv", walked=True)
            torrents_fd = b.mkdir(dest_fd, "torrents", walked=True)
            links_fd = b.mkdir(dest_fd, "links", walked=True)
            tracker_fds = [b.mkdir(links_fd, name, walked=True) for name in TRACKERS]
            symlinks_fd = b.mkdir(links_fd, "symlinks", walked=True)
            fds = [media_fd, movies_fd, tv_fd, torrents_fd, links_fd, symlinks_fd, *tracker_fds]
            try:
                for _ in range(movies):
                    self.movie(movies_fd, torrents_fd, tracker_fds, symlinks_fd)
                for _ in range(max(1, movies // 150)):
                    self.show(tv_fd)
                self.system_dirs(dest_fd, media_fd)
            finally:
                for fd in fds:
                    os.close(fd)
        finally:
            os.close(dest_fd)
        return b.finish()

    def movie(
        self, movies_fd: int, torrents_fd: int, tracker_fds: list[int], symlinks_fd: int
    ) -> None:
        rng, b = self.rng, self.builder
        release = self.release()
        name = release.release_name(rng)
        filename = f"{name}.{release.extension}"
        b.counts.movies += 1
        with b.directory(movies_fd, release.folder, walked=True) as folder_fd:
            inode = b.media(folder_fd, filename, size=release.size, walked=True)
            nfo = f"<movie><title>{release.title}</title><year>{release.year}</year></movie>\n"
            if rng.random() < 0.9:
                b.small(folder_fd, f"{name}.nfo", nfo.encode())
            if rng.random() < 0.75:
                b.small(folder_fd, "poster.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF", size=400_000)
            if rng.random() < 0.2:
                b.small(folder_fd, "fanart.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF", size=900_000)
            if rng.random() < 0.3:
                b.small(folder_fd, f"{name}.en.srt", b"1\n00:00:01,000 --> 00:00:03,000\nHi\n")
            if rng.random() < 0.015:
                self.extras(folder_fd, name)
            if rng.random() < 0.01:
                self.synology_thumbnails(folder_fd, filename)
            if rng.random() < 0.03:
                b.small(folder_fd, ".DS_Store", b"\x00\x00\x00\x01Bud1")
            if rng.random() < 0.01:
                # An AppleDouble twin: a media extension behind a hidden name.
                b.small(folder_fd, f"._{filename}", b"\x00\x05\x16\x07", size=4096)
            if rng.random() < 0.005:
                with b.directory(folder_fd, ".actors", walked=False) as actors_fd:
                    for index in range(3):
                        b.small(actors_fd, f"Actor_{index}.jpg", b"\xff\xd8\xff\xe0")
            if rng.random() < self.hardlink_share:
                self.torrent(inode, folder_fd, filename, name, release, torrents_fd, tracker_fds)
            elif rng.random() < 0.01:
                self.download_in_progress(torrents_fd, name, release)
            if rng.random() < 0.01:
                b.symlink(f"../../media/movies/{release.folder}/{filename}", symlinks_fd, filename)

    def extras(self, folder_fd: int, name: str) -> None:
        b = self.builder
        with b.directory(folder_fd, "Featurettes", walked=True) as extras_fd:
            for index in range(self.rng.randrange(1, 4)):
                size = int(self.rng.uniform(0.05, 0.8) * GiB)
                b.media(extras_fd, f"{name}.Featurette.{index + 1}.mkv", size=size, walked=True)

    def synology_thumbnails(self, folder_fd: int, filename: str) -> None:
        b = self.builder
        with (
            b.directory(folder_fd, "@eaDir", walked=False) as ea_fd,
            b.directory(ea_fd, filename, walked=False) as thumbs_fd,
        ):
            b.small(thumbs_fd, "SYNOVIDEO_VIDEO_SCREENSHOT.jpg", b"\xff\xd8\xff\xe0")
            b.small(thumbs_fd, "SYNOINDEX_MEDIA_INFO", b"{}")

    def torrent(
        self,
        inode: int,
        folder_fd: int,
        filename: str,
        name: str,
        release: Release,
        torrents_fd: int,
        tracker_fds: list[int],
    ) -> None:
        rng, b = self.rng, self.builder
        with b.directory(torrents_fd, name, walked=True) as torrent_fd:
            b.link(inode, folder_fd, filename, torrent_fd, filename, walked=True)
            if rng.random() < 0.3:
                b.small(torrent_fd, f"{name}.nfo", f"{release.title} {release.year}\n".encode())
            if rng.random() < 0.1:
                b.small(torrent_fd, "RARBG.txt", b"Downloaded from the usual place\n")
            if rng.random() < 0.02:
                with b.directory(torrent_fd, "Sample", walked=True) as sample_fd:
                    sample = f"{name}.sample.{release.extension}"
                    b.media(sample_fd, sample, size=int(rng.uniform(20, 120) * MiB), walked=True)
        if rng.random() < 0.1:
            # cross-seed: a third name for the same inode under links/<tracker>/.
            b.link(inode, folder_fd, filename, rng.choice(tracker_fds), filename, walked=True)

    def download_in_progress(self, torrents_fd: int, name: str, release: Release) -> None:
        b = self.builder
        with b.directory(torrents_fd, name, walked=True) as torrent_fd:
            suffix = self.rng.choice((".part", ".!qB", ".tmp", ".download"))
            b.media(
                torrent_fd, f"{name}.{release.extension}{suffix}", size=release.size, walked=True
            )

    def show(self, tv_fd: int) -> None:
        rng, b = self.rng, self.builder
        title, year = self.title()
        dotted = ".".join(title.replace("&", "and").replace(",", "").split())
        with b.directory(tv_fd, f"{title} ({year})", walked=True) as show_fd:
            b.small(show_fd, "tvshow.nfo", f"<tvshow><title>{title}</title></tvshow>\n".encode())
            b.small(show_fd, "poster.jpg", b"\xff\xd8\xff\xe0", size=300_000)
            first_season = 0 if rng.random() < 0.2 else 1  # "Season 00" holds the specials
            for season in range(first_season, rng.randrange(2, 7)):
                with b.directory(show_fd, f"Season {season:02d}", walked=True) as season_fd:
                    quality = rng.choice(("1080p", "720p", "2160p"))
                    for episode in range(1, rng.randrange(6, 14)):
                        episode_name = f"{dotted}.S{season:02d}E{episode:02d}.{quality}.WEB-DL"
                        b.counts.episodes += 1
                        size = int(rng.uniform(0.3, 4.0) * GiB)
                        b.media(season_fd, f"{episode_name}.mkv", size=size, walked=True)
                        if rng.random() < 0.3:
                            b.small(season_fd, f"{episode_name}.nfo", b"<episodedetails/>\n")

    def system_dirs(self, dest_fd: int, media_fd: int) -> None:
        """Directories a scan must not enter, each holding media files it must not report."""
        b = self.builder
        for parent_fd, path in (
            (media_fd, (".Trash-1000", "files")),
            (dest_fd, ("$RECYCLE.BIN", "S-1-5-21-1000")),
            (dest_fd, ("System Volume Information",)),
            (media_fd, (".hidden-library",)),
        ):
            opened: list[int] = []
            try:
                fd = parent_fd
                for name in path:
                    fd = b.mkdir(fd, name, walked=False)
                    opened.append(fd)
                for index in range(5):
                    release = self.release()
                    b.media(fd, f"{release.folder}.{index}.mkv", size=release.size, walked=False)
            finally:
                for fd in reversed(opened):
                    os.close(fd)


def read_manifest(dest: Path) -> dict[str, object] | None:
    """The manifest of a complete tree at `dest`, or None when there is none."""
    try:
        data: dict[str, object] = json.loads((dest / MANIFEST_NAME).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return data


def generate(
    dest: Path, *, movies: int, seed: int, hardlink_share: float, size_mib: int | None
) -> dict[str, object]:
    """Generate the tree and write its manifest; `dest` must be missing or empty."""
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    generator = TreeGenerator(dest, seed=seed, hardlink_share=hardlink_share, size_mib=size_mib)
    started = time.perf_counter()
    counts = generator.generate(movies)
    os.sync()
    seconds = time.perf_counter() - started
    manifest: dict[str, object] = {
        "parameters": {
            "movies": movies,
            "seed": seed,
            "hardlink_share": hardlink_share,
            "size_mib": size_mib,
        },
        "counts": asdict(counts),
        "generation_seconds": round(seconds, 3),
    }
    (dest / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="directory to create (missing or empty)")
    parser.add_argument("--movies", type=int, default=20_000, help="number of movies (20000)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (1)")
    parser.add_argument(
        "--hardlink-share",
        type=float,
        default=0.3,
        help="share of the movies hardlinked into torrents/ (0.3)",
    )
    parser.add_argument(
        "--size-mib",
        type=int,
        default=None,
        help="make every media file exactly N MiB (still sparse); default: realistic sizes",
    )
    args = parser.parse_args(argv)
    if args.movies < 0:
        parser.error("--movies must be >= 0")
    if not 0.0 <= args.hardlink_share <= 1.0:
        parser.error("--hardlink-share must be between 0 and 1")
    if args.size_mib is not None and args.size_mib < 1:
        parser.error("--size-mib must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        manifest = generate(
            args.dest,
            movies=args.movies,
            seed=args.seed,
            hardlink_share=args.hardlink_share,
            size_mib=args.size_mib,
        )
    except OSError as error:
        print(f"gen_tree: {error}", file=sys.stderr)
        return 1
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    for key, value in counts.items():
        print(f"{key.replace('_', ' ')}: {value}")
    print(f"generation time: {manifest['generation_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
