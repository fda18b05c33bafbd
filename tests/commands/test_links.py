"""`scanarr links` as a user runs it: hardlink groups across roots, links outside them, orphans
and the bytes deleting them really frees."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from helpers.cli import cli_json, run_cli
from scanarr.links import LinkIndex, collect


def links_json(*args: str) -> dict[str, Any]:
    return cli_json("links", "--json", *args)


def write(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.link(source, target)
    return target


def arr_stack(base: Path) -> dict[str, Path]:
    """media/, torrents/ and links/ (cross-seed) as an *arr stack lays them out, plus a folder
    outside the scanned roots."""
    film = write(base / "media/Film (2020)/Film.2020.mkv", 30_000)
    link(film, base / "torrents/Film.2020/Film.2020.mkv")
    link(film, base / "links/tracker-a/Film.2020.mkv")
    link(film, base / "outside/Film.2020.mkv")
    show = write(base / "media/Show/S01E01.mkv", 20_000)
    link(show, base / "torrents/Show.S01E01.mkv")
    single = write(base / "media/Alone (1999)/Alone.mkv", 10_000)
    return {"film": film, "show": show, "single": single}


def test_groups_across_three_roots_with_a_link_outside(tmp_path: Path) -> None:
    files = arr_stack(tmp_path)
    roots = [str(tmp_path / name) for name in ("media", "torrents", "links")]
    document = links_json(*roots)
    assert document["roots"] == roots
    groups = document["groups"]
    assert [group["size_bytes"] for group in groups] == [30_000, 20_000, 10_000]  # largest first
    film = groups[0]
    assert film["inode"] == files["film"].stat().st_ino
    assert film["hardlink_count"] == 4
    assert film["links_seen"] == 3
    assert film["links_outside"] == 1  # outside/Film.2020.mkv
    assert film["paths"] == [
        {"root": roots[0], "relative_path": "Film (2020)/Film.2020.mkv"},
        {"root": roots[1], "relative_path": "Film.2020/Film.2020.mkv"},
        {"root": roots[2], "relative_path": "tracker-a/Film.2020.mkv"},
    ]
    show = groups[1]
    assert (show["links_seen"], show["links_outside"]) == (2, 0)
    totals = document["totals"]
    assert totals["files"] == 6
    assert totals["inodes"] == 3
    assert totals["bytes"] == 60_000  # each inode once
    assert totals["hardlinked_inodes"] == 2
    assert (totals["outside_inodes"], totals["outside_bytes"]) == (1, 30_000)
    by_root = {entry["root"]: entry for entry in totals["roots"]}
    # Only the single film lives in media alone; the show also has a name in torrents.
    assert by_root[roots[0]]["freed_if_deleted_bytes"] == 10_000
    assert by_root[roots[0]]["bytes"] == 60_000
    assert by_root[roots[1]]["freed_if_deleted_bytes"] == 0


def test_table_shows_size_once_every_path_and_totals(tmp_path: Path) -> None:
    arr_stack(tmp_path)
    roots = [str(tmp_path / name) for name in ("media", "torrents", "links")]
    result = run_cli("links", *roots)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["SIZE", "LINKS", "OUTSIDE", "PATH"]
    assert lines[1].split(maxsplit=4) == [
        "29.3",
        "KiB",
        "3",
        "1",
        f"{roots[0]}/Film (2020)/Film.2020.mkv",
    ]
    assert lines[2].strip() == f"{roots[1]}/Film.2020/Film.2020.mkv"
    assert lines[3].strip() == f"{roots[2]}/tracker-a/Film.2020.mkv"
    assert lines[4].split()[:3] == ["19.5", "KiB", "2"]
    assert "total size: 58.6 KiB (60000 bytes, each inode once)" in lines
    assert "inodes with links outside the scanned roots: 1 (29.3 KiB)" in lines


def test_orphans_with_exact_freed_bytes(tmp_path: Path) -> None:
    torrents, media, cross = tmp_path / "torrents", tmp_path / "media", tmp_path / "links"
    other, outside = tmp_path / "other", tmp_path / "outside"
    # Orphans whose deletion frees their bytes:
    write(torrents / "gone/Gone.mkv", 1_000)  # its library copy was deleted
    twice = write(torrents / "a/Twice.mkv", 2_000)  # two names, both under torrents
    link(twice, torrents / "b/Twice.mkv")
    # Not orphans: still in the library, or still seeded by cross-seed.
    in_library = write(media / "Kept/Kept.mkv", 4_000)
    link(in_library, torrents / "Kept.mkv")
    seeded = write(torrents / "Seeded.mkv", 8_000)
    link(seeded, cross / "tracker/Seeded.mkv")
    # Orphans that deleting does not free:
    held = write(torrents / "Held.mkv", 16_000)
    link(held, outside / "Held.mkv")  # a link outside every scanned root
    partial = write(torrents / "Partial.mkv", 32_000)
    link(partial, torrents / "Partial.mkv.part")  # a name the media filter leaves out
    elsewhere = write(torrents / "Elsewhere.mkv", 64_000)
    link(elsewhere, other / "Elsewhere.mkv")  # a name under another scanned root
    (media / "empty").mkdir()

    document = links_json(
        "--orphans-in", str(torrents), "--against", str(media), "--against", str(cross), str(other)
    )
    orphans = {Path(o["paths"][0]["relative_path"]).name: o for o in document["orphans"]}
    assert set(orphans) == {"Gone.mkv", "Twice.mkv", "Held.mkv", "Partial.mkv", "Elsewhere.mkv"}
    assert [o["size_bytes"] for o in document["orphans"]] == [64_000, 32_000, 16_000, 2_000, 1_000]
    assert {name: o["freed_bytes"] for name, o in orphans.items()} == {
        "Gone.mkv": 1_000,
        "Twice.mkv": 2_000,  # once, although it has two names
        "Held.mkv": 0,
        "Partial.mkv": 0,
        "Elsewhere.mkv": 0,
    }
    assert orphans["Held.mkv"]["kept_by"] == "outside"
    assert orphans["Partial.mkv"]["kept_by"] == "outside"
    assert orphans["Elsewhere.mkv"]["kept_by"] == "other_root"
    assert orphans["Gone.mkv"]["kept_by"] is None
    totals = document["totals"]
    assert totals["freed_bytes"] == 3_000
    assert totals["bytes"] == 115_000
    assert totals["files"] == 6  # Twice.mkv counts its two names
    assert totals["kept_by_outside_links"] == {"inodes": 2, "bytes": 48_000}
    assert totals["kept_by_other_roots"] == {"inodes": 1, "bytes": 64_000}

    text = run_cli(
        "links",
        "--orphans-in",
        str(torrents),
        "--against",
        str(media),
        "--against",
        str(cross),
        str(other),
    )
    assert text.returncode == 0, text.stderr
    assert "deleting them frees: 2.9 KiB (3000 bytes)" in text.stdout
    assert "(frees nothing: 1 link(s) outside the scanned roots)" in text.stdout
    assert f"(frees nothing: also linked under {other})" in text.stdout
    assert "not freed: 2 inodes (46.9 KiB) also have links outside the scanned roots" in text.stdout

    # Deleting the orphans' names under torrents frees exactly the inodes said to be freed.
    freed = {(o["device_id"], o["inode"]) for o in document["orphans"] if o["freed_bytes"]}
    for orphan in document["orphans"]:
        for entry in orphan["paths"]:
            if entry["root"] == str(torrents):
                os.unlink(torrents / entry["relative_path"])
    remaining = {
        (status.st_dev, status.st_ino)
        for directory, _, names in os.walk(tmp_path)
        for name in names
        for status in [os.lstat(os.path.join(directory, name))]
    }
    survivors = {(o["device_id"], o["inode"]) for o in document["orphans"]} - freed
    assert not freed & remaining
    assert survivors <= remaining


def test_nested_root_lists_each_file_once(tmp_path: Path) -> None:
    arr_stack(tmp_path)
    document = links_json(str(tmp_path), str(tmp_path / "torrents"))
    assert document["totals"]["files"] == 7  # media 3 + torrents 2 + links 1 + outside 1
    film = document["groups"][0]
    assert [p["root"] for p in film["paths"]] == [
        str(tmp_path),
        str(tmp_path),
        str(tmp_path),
        str(tmp_path / "torrents"),
    ]
    assert film["links_outside"] == 0


def test_orphans_of_a_folder_against_a_folder_inside_it(tmp_path: Path) -> None:
    """`--orphans-in /data --against /data/media`: what under /data is not in the library."""
    files = arr_stack(tmp_path)
    document = links_json("--orphans-in", str(tmp_path), "--against", str(tmp_path / "media"))
    names = sorted(p["relative_path"] for o in document["orphans"] for p in o["paths"])
    assert names == []  # every file under the data folder is in the library
    os.unlink(files["single"])
    write(tmp_path / "torrents/New.mkv", 500)
    document = links_json("--orphans-in", str(tmp_path), "--against", str(tmp_path / "media"))
    assert [o["paths"] for o in document["orphans"]] == [
        [{"root": str(tmp_path), "relative_path": "torrents/New.mkv"}]
    ]
    assert document["totals"]["freed_bytes"] == 500


def test_non_utf8_name_survives_json(tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/F\xe9lm.mkv"
    with open(raw, "wb") as file:
        file.write(b"x" * 10)
    document = links_json(str(tmp_path))
    relative = document["groups"][0]["paths"][0]["relative_path"]
    assert os.fsencode(relative) == b"F\xe9lm.mkv"
    table = run_cli("links", str(tmp_path))
    assert "F\\xe9lm.mkv" in table.stdout


def test_bad_arguments_are_refused_with_exit_code_2(tmp_path: Path) -> None:
    for args, message in (
        ([], "give at least one ROOT"),
        (["--against", str(tmp_path)], "--against needs --orphans-in"),
        (["--orphans-in", str(tmp_path)], "--orphans-in needs at least one --against"),
        ([str(tmp_path), f"{tmp_path}/"], "root given twice"),
    ):
        result = run_cli("links", *args)
        assert result.returncode == 2, args
        assert message in result.stderr


def test_missing_root_is_reported_and_results_marked_incomplete(tmp_path: Path) -> None:
    write(tmp_path / "media/a.mkv", 10)
    result = run_cli("links", str(tmp_path / "media"), str(tmp_path / "missing"))
    assert result.returncode == 1
    assert f"cannot scan {tmp_path / 'missing'}" in result.stderr
    assert "results above are incomplete" in result.stderr
    assert f"{tmp_path}/media/a.mkv" in result.stdout


def test_index_holds_columns_not_objects(tmp_path: Path) -> None:
    """The library API groups by (device, inode) over the walked columns."""
    files = arr_stack(tmp_path)
    table, errors = collect([str(tmp_path / "media"), str(tmp_path / "torrents")])
    assert errors == []
    index = LinkIndex(table)
    assert len(table) == 5
    assert len(index) == 3
    groups = list(index.groups())
    assert groups[0].inode == files["film"].stat().st_ino
    assert groups[0].paths == ((0, b"Film (2020)/Film.2020.mkv"), (1, b"Film.2020/Film.2020.mkv"))
    assert groups[0].links_outside == 2
