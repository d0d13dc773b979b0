"""Append-only operator files (alert.log, costs.csv) that never fail a request.

Each append is one `os.write` of whole lines on a descriptor opened with O_APPEND,
under an exclusive `fcntl.flock` of the file, so that lines from several processes
(workers on one host) never interleave and the header is written once (logging's file
handlers promise neither). A write cut short is taken back, so no half line is ever
left. A failure (unwritable path, full disk) is counted, logged once, and reported
as degraded until a later write succeeds again."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("gradepulse.sinks")


@dataclass(frozen=True, slots=True)
class SinkStatus:
    name: str
    path: str
    ok: bool
    failures: int
    last_error: str | None


class FileSink:
    """Appends whole lines to one file; `header` is written when the file is empty."""

    def __init__(
        self, name: str, path: str | Path, *, header: str | None = None
    ) -> None:
        self.name = name
        self.path = Path(path)
        self.header = header
        self.failures = 0
        self.last_error: str | None = None
        self._failing = False
        self._lock = threading.Lock()

    def append(self, lines: list[str], *, resume: bool = False) -> bool:
        """Append `lines` (without newlines); False when the file cannot be written.

        With `resume`, a leading part of `lines` that the file already ends with is
        not written again (an earlier append whose success was not recorded: the
        cost rows of a worker that died between the append and the mark)."""
        with self._lock:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    # Released when the descriptor closes; other workers wait for it.
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    size = os.fstat(fd).st_size
                    todo = (
                        lines[_written_already(fd, size, lines) :] if resume else lines
                    )
                    data = "".join(line + "\n" for line in todo).encode()
                    if self.header is not None and size == 0:
                        data = (self.header + "\n").encode() + data
                    if data:
                        _write_whole(fd, data, size)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc.strerror or exc}"
                if not self._failing:
                    log.error(
                        "cannot write %s (%s): %s",
                        self.name,
                        self.path,
                        self.last_error,
                    )
                self._failing = True
                return False
            if self._failing:
                log.warning("%s (%s) is writable again", self.name, self.path)
            self._failing = False
            return True

    def status(self) -> SinkStatus:
        return SinkStatus(
            name=self.name,
            path=str(self.path),
            ok=not self._failing,
            failures=self.failures,
            last_error=self.last_error,
        )


def _write_whole(fd: int, data: bytes, size: int) -> None:
    """Append `data` whole, or nothing: a write the disk cut short (full, or gone
    read-only mid-way) is taken back to the file's `size` before, so that no half
    line is ever left for the next append to continue."""
    try:
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write: {written} of {len(data)} bytes")
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, size)
        raise


def _written_already(fd: int, size: int, lines: list[str]) -> int:
    """How many of `lines`, from the first, the file already ends with."""
    if not lines or size == 0:
        return 0
    want = sum(len(line.encode()) + 1 for line in lines) + 1
    start = max(0, size - want)
    tail = os.pread(fd, size - start, start).decode(errors="replace")
    last = tail.split("\n")
    if last and last[-1] == "":
        last.pop()
    if start > 0 and last:
        last.pop(0)  # possibly cut
    for count in range(min(len(lines), len(last)), 0, -1):
        if last[-count:] == lines[:count]:
            return count
    return 0
