"""Process and host readings through psutil, behind a small interface for tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

MB = float(2**20)


@dataclass(frozen=True, slots=True)
class SystemReading:
    memory_mb: float  # resident set size, MB = 2**20 bytes
    cpu_percent: float
    disk_free_mb: float


class SystemReader(Protocol):
    def read(self) -> SystemReading: ...


class PsutilReader:
    """Reads this process's RSS and CPU and the free disk where the files are."""

    def __init__(self, disk_path: str | Path = ".") -> None:
        self.process = psutil.Process()
        self.disk_path = str(disk_path)
        self.process.cpu_percent(None)  # the first call only primes the counter

    def read(self) -> SystemReading:
        return SystemReading(
            memory_mb=self.process.memory_info().rss / MB,
            cpu_percent=self.process.cpu_percent(None),
            disk_free_mb=psutil.disk_usage(self.disk_path).free / MB,
        )
