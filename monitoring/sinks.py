"""Append-only operator files (alert.log, costs.csv) that never fail a request.

Each line goes out as one `os.write` on a descriptor opened with O_APPEND, so that
lines from several processes never interleave (logging's file handlers do not promise
that). A failure (unwritable path, full disk) is counted, logged once, and reported
as degraded until a later write succeeds again."""

from __future__ import annotations

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

    def append(self, lines: list[str]) -> bool:
        """Append `lines` (without newlines); False when the file cannot be written."""
        data = "".join(line + "\n" for line in lines).encode()
        with self._lock:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    if self.header is not None and os.fstat(fd).st_size == 0:
                        data = (self.header + "\n").encode() + data
                    written = os.write(fd, data)
                    if written != len(data):
                        raise OSError(f"short write: {written} of {len(data)} bytes")
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
