"""Exceptions raised by the data layer.

``DataError`` marks a user mistake (bad path, wrong layout, broken file...). Its
message is always ONE line that names the path or the problem, so the CLI can
print it as is and exit with status 2.
"""
from __future__ import annotations

import os


def one_line(text: object) -> str:
    """Collapse any line breaks so a message prints on a single line."""
    return " ".join(str(text).splitlines()).strip()


class DataError(Exception):
    """A user-facing data problem; ``str(e)`` is one line naming the path/problem."""

    def __init__(self, message: object):
        super().__init__(one_line(message))


class UnreadableImage(DataError):
    """An image file that cannot be decoded (truncated, corrupt, empty, unknown format).

    ``path`` is the file (or a description of the file object) and ``reason`` a
    short one-line explanation such as ``"truncated JPEG: image file is truncated"``.
    """

    def __init__(self, path: object, reason: str):
        self.path = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        self.reason = one_line(reason)
        super().__init__(f"unreadable image {self.path}: {self.reason}")
