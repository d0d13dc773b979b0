"""alert.log and costs.csv appends from several processes: every line whole, the
header once, each process's lines in its order; a resumed append skips what the file
already ends with."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from monitoring.sinks import FileSink

PROCESSES = 4
APPENDS = 150
HEADER = "timestamp,environment,db_queries"
TIMEOUT_S = 60


def _line(writer: int, n: int, part: int) -> str:
    # Lines of very different lengths, some far above a pipe buffer (4 KiB).
    width = (n * 37 + part * 11) % 9000
    return f"w{writer} n{n} p{part} " + "x" * width + " end"


def _append_many(path: str, writer: int) -> None:
    sink = FileSink("test", path, header=HEADER)
    for n in range(APPENDS):
        lines = [_line(writer, n, part) for part in range(1 + n % 3)]
        assert sink.append(lines)


def test_processes_appending_together_never_interleave_a_line(tmp_path: Path) -> None:
    path = tmp_path / "shared.log"
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_append_many, args=(str(path), writer))
        for writer in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT_S)
    assert [process.exitcode for process in processes] == [0] * PROCESSES

    lines = path.read_text().split("\n")
    assert lines.pop() == ""  # the file ends with a newline
    assert lines[0] == HEADER
    assert lines.count(HEADER) == 1
    expected = {
        writer: [
            _line(writer, n, part) for n in range(APPENDS) for part in range(1 + n % 3)
        ]
        for writer in range(PROCESSES)
    }
    for writer in range(PROCESSES):
        mine = [line for line in lines[1:] if line.startswith(f"w{writer} ")]
        assert mine == expected[writer]
    assert len(lines) == 1 + sum(len(ours) for ours in expected.values())


def test_a_resumed_append_skips_the_lines_the_file_already_ends_with(
    tmp_path: Path,
) -> None:
    sink = FileSink("costs.csv", tmp_path / "costs.csv", header=HEADER)
    assert sink.append(["a,1", "b,2"])

    assert sink.append(["b,2", "c,3"], resume=True)
    assert sink.append(["b,2", "c,3"], resume=True)
    assert sink.append(["a,1"], resume=True)  # not at the end: written again

    assert (tmp_path / "costs.csv").read_text().splitlines() == [
        HEADER,
        "a,1",
        "b,2",
        "c,3",
        "a,1",
    ]


def test_a_resumed_append_reads_only_the_end_of_a_long_file(tmp_path: Path) -> None:
    path = tmp_path / "costs.csv"
    sink = FileSink("costs.csv", path)
    assert sink.append([f"row,{n}" for n in range(5000)])

    assert sink.append(["row,4998", "row,4999", "row,5000"], resume=True)
    assert sink.append(["row,0"], resume=True)

    lines = path.read_text().splitlines()
    assert lines[-3:] == ["row,4999", "row,5000", "row,0"]
    assert len(lines) == 5002
