"""`scanarr dupes ROOT [ROOT ...]`: identical media files stored as separate inodes (copies, not
hardlinks), the bytes they waste, and `--relink` to replace the copies with hardlinks.

Files of a size no other inode has are never read; the others are told apart by a sampled
fingerprint (head and tail), and only a full xxh3-128 of the content makes a duplicate.
`--relink` is a dry run unless `--yes` is given; it keeps one copy per device (the one with the
most links), never links across devices, and skips any name whose file changed since the scan.

Exit code 0 when everything was read (and every relink done or skipped for a reason), 1 when part
of a tree or a file could not be read, or a relink failed; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from scanarr.cli.common import (
    ProgressLine,
    add_walk_arguments,
    display,
    human_bytes,
    json_dump,
    json_path,
    positive_int,
    report_walk_errors,
    walk_errors_json,
)
from scanarr.cli.links import collect_from_args, full_path, roots_or_exit
from scanarr.dupes import (
    DEFAULT_SAMPLE_SIZE,
    DuplicateGroup,
    DuplicateReport,
    RelinkSummary,
    Stage,
    find_duplicates,
    relink,
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "dupes",
        help="find identical media files stored twice (copies, not hardlinks); --relink them",
        description=(
            "Find identical files under the ROOTs that are separate inodes: grouped by size, "
            "then by a sampled fingerprint, then confirmed by the full xxh3-128 of the content "
            "(a file whose size no other file has is never read). Each group shows the bytes a "
            "relink would free and whether its copies share a device. With --relink, replace "
            "every copy with a hardlink to one kept file on the same device: a dry run unless "
            "--yes is given. The replaced names then carry the kept file's owner, mode and mtime."
        ),
    )
    parser.add_argument("roots", nargs="+", metavar="ROOT", help="folder to scan")
    parser.add_argument(
        "--relink",
        action="store_true",
        help="replace copies with hardlinks to one kept file (dry run without --yes)",
    )
    parser.add_argument("--yes", action="store_true", help="with --relink: really do it")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--sample-size",
        type=positive_int,
        default=DEFAULT_SAMPLE_SIZE,
        metavar="BYTES",
        help=f"head and tail bytes of the sampled fingerprint (default: {DEFAULT_SAMPLE_SIZE})",
    )
    parser.add_argument(
        "--min-size",
        type=positive_int,
        default=1,
        metavar="BYTES",
        help="ignore files smaller than this (default: 1, empty files are ignored)",
    )
    add_walk_arguments(parser)
    parser.set_defaults(func=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    parser: argparse.ArgumentParser = args.parser
    if args.yes and not args.relink:
        parser.error("--yes only applies to --relink")
    roots = roots_or_exit(parser, args.roots)
    table, errors = collect_from_args(args, roots)
    failures = report_walk_errors(errors, sys.stderr)
    progress = ProgressLine(sys.stderr)

    def hashing_progress(stage: Stage, done: int, total: int) -> None:
        if progress.due(final=done >= total):
            progress.show(f"hashing ({stage}): {done}/{total} files")

    try:
        report = find_duplicates(
            table,
            sample_size=args.sample_size,
            threads=args.threads,
            min_size=args.min_size,
            progress=hashing_progress,
        )
    finally:
        progress.clear()
    del table
    for failure in report.failures:
        print(f"scanarr: cannot read {display(failure.path)}: {failure.message}", file=sys.stderr)
    summary = relink(report, act=args.yes, threads=args.threads) if args.relink else None
    out = sys.stdout
    try:
        if args.json:
            out.write("".join(_report_json(report, summary, errors)) + "\n")
        else:
            _print_groups(out, report)
            _print_totals(out, report)
            if summary is not None:
                _print_relink(out, summary)
    except BrokenPipeError:
        sys.stderr.close()
        return 0
    code = 0
    if failures or report.failures:
        print(
            f"scanarr: {failures + len(report.failures)} error(s): part of the files could not "
            "be read, so some duplicates may be missing",
            file=sys.stderr,
        )
        code = 1
    if summary is not None and summary.count("failed"):
        print(f"scanarr: {summary.count('failed')} relink(s) failed (see above)", file=sys.stderr)
        code = 1
    return code


# --- tables -------------------------------------------------------------------------------------


def _print_groups(out: TextIO, report: DuplicateReport) -> None:
    roots = report.roots
    for number, group in enumerate(report.groups, 1):
        where = "same device" if group.same_device else f"{len(group.devices)} devices"
        out.write(
            f"group {number}: {len(group.copies)} copies of {human_bytes(group.size_bytes)} "
            f"({group.size_bytes} bytes), {where}, reclaimable "
            f"{human_bytes(group.reclaimable_bytes)}  {group.fingerprint}\n"
        )
        kept = {id(keep) for keep, _ in group.relink_plan()}
        for copy in group.copies:
            role = "keep" if id(copy) in kept else "copy"
            notes = [f"device {copy.device_id}, inode {copy.inode}"]
            if copy.links_outside:
                notes.append(f"{copy.links_outside} link(s) outside the scanned roots")
            if len([c for c in group.copies if c.device_id == copy.device_id]) == 1:
                role = "    "
                notes.append("alone on its device: cannot be hardlinked to the others")
            for index, (root, relative_path) in enumerate(copy.paths):
                label = role if index == 0 else "    "
                line = f"  {label}  {full_path(roots, root, relative_path)}"
                if index == 0:
                    line += f"  ({'; '.join(notes)})"
                out.write(line + "\n")
        out.write("\n")


def _print_totals(out: TextIO, report: DuplicateReport) -> None:
    copies = sum(len(group.copies) for group in report.groups)
    lines = [
        f"duplicate groups: {len(report.groups)} ({copies} inodes)",
        f"duplicate bytes: {human_bytes(report.duplicate_bytes)} ({report.duplicate_bytes} "
        "bytes beyond one copy of each)",
        f"reclaimable by --relink: {human_bytes(report.reclaimable_bytes)} "
        f"({report.reclaimable_bytes} bytes: same-device copies with no link outside the roots)",
        f"files: {report.files}; inodes sharing their size with another: "
        f"{report.size_candidates}, sampled: {report.sampled_inodes}, hashed in full: "
        f"{report.full_inodes}",
    ]
    not_linkable = sum(1 for group in report.groups if not group.same_device)
    if not_linkable:
        lines.append(f"groups spanning devices (copies there cannot be hardlinked): {not_linkable}")
    out.write("\n".join(lines) + "\n")


def _print_relink(out: TextIO, summary: RelinkSummary) -> None:
    out.write("\n")
    for outcome in summary.outcomes:
        path, kept = display(outcome.path), display(outcome.kept_path)
        if outcome.status in ("relinked", "would_relink"):
            verb = "relinked" if outcome.status == "relinked" else "would relink"
            out.write(f"{verb}: {path} -> {kept}\n")
        else:
            out.write(f"{outcome.status}: {path}: {outcome.reason}\n")
    skipped, failed = summary.count("skipped"), summary.count("failed")
    if summary.acted:
        out.write(
            f"relinked {summary.count('relinked')} names, freed {human_bytes(summary.freed_bytes)}"
            f" ({summary.freed_bytes} bytes); skipped {skipped}, failed {failed}\n"
        )
    else:
        out.write(
            f"dry run: would relink {summary.count('would_relink')} names, freeing "
            f"{human_bytes(summary.freed_bytes)} ({summary.freed_bytes} bytes); skipped "
            f"{skipped}, failed {failed}. Nothing was changed: add --yes to relink.\n"
        )


# --- JSON ---------------------------------------------------------------------------------------


def _group_json(group: DuplicateGroup, roots: Sequence[str]) -> dict[str, Any]:
    kept = {id(keep) for keep, _ in group.relink_plan()}
    return {
        "size_bytes": group.size_bytes,
        "fingerprint": group.fingerprint,
        "same_device": group.same_device,
        "duplicate_bytes": group.duplicate_bytes,
        "reclaimable_bytes": group.reclaimable_bytes,
        "copies": [
            {
                "device_id": copy.device_id,
                "inode": copy.inode,
                "hardlink_count": copy.hardlink_count,
                "links_outside": copy.links_outside,
                "kept": id(copy) in kept,
                "paths": [
                    {"root": roots[root], "relative_path": json_path(relative_path)}
                    for root, relative_path in copy.paths
                ],
            }
            for copy in group.copies
        ],
    }


def _report_json(
    report: DuplicateReport, summary: RelinkSummary | None, errors: Sequence[Any]
) -> Iterator[str]:
    yield '{"roots":' + json_dump(list(report.roots)) + ',"groups":['
    for number, group in enumerate(report.groups):
        yield ("," if number else "") + json_dump(_group_json(group, report.roots))
    totals = {
        "groups": len(report.groups),
        "duplicate_bytes": report.duplicate_bytes,
        "reclaimable_bytes": report.reclaimable_bytes,
        "files": report.files,
        "size_candidates": report.size_candidates,
        "sampled_inodes": report.sampled_inodes,
        "full_inodes": report.full_inodes,
    }
    yield '],"totals":' + json_dump(totals)
    relink_json: dict[str, Any] | None = None
    if summary is not None:
        relink_json = {
            "acted": summary.acted,
            "freed_bytes": summary.freed_bytes,
            "outcomes": [
                {
                    "path": json_path(o.path),
                    "kept_path": json_path(o.kept_path),
                    "status": o.status,
                    "reason": o.reason,
                    "freed_bytes": o.freed_bytes,
                }
                for o in summary.outcomes
            ],
        }
    yield ',"relink":' + json_dump(relink_json)
    failures = [{"path": json_path(f.path), "message": f.message} for f in report.failures]
    yield ',"read_errors":' + json_dump(failures)
    yield ',"errors":' + json_dump(walk_errors_json(errors)) + "}"
