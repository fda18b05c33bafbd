"""Commands the API sends, built for tests."""

from __future__ import annotations

from scanarr.protocol import CommandFilesDelete, DeleteFile, DeletePath


def delete_one(
    request_id: str,
    volume_path: str,
    relative_path: str,
    *,
    media_file_id: str = "m",
    deletion_id: str = "d",
) -> CommandFilesDelete:
    """A deletion of one media file named by one path."""
    path = DeletePath(volume_path=volume_path, relative_path=relative_path)
    return CommandFilesDelete(
        request_id=request_id,
        deletion_id=deletion_id,
        files=[DeleteFile(media_file_id=media_file_id, paths=[path])],
    )
