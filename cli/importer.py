"""`python -m db.importer` (or `cli.importer`): CSV import, all rows or none."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from cli.database import add_database_url, database_url, migrated
from cli.parsing import Parser
from db.csvrows import (
    ParsedCsv,
    RowProblem,
    parse_grades_csv,
    parse_students_csv,
    sort_problems,
)
from db.engine import Database, create_database
from db.importer import ImportRejected, ImportSummary, find_conflicts, import_rows
from db.validation import NewGrade, NewStudent

PROG = "python -m db.importer"


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    parser = Parser(
        prog=prog,
        description="Import students and grades from CSV files: every row is "
        "validated first; one bad row and nothing is imported.",
    )
    parser.add_argument(
        "--students", type=Path, help="CSV: student_id,name,email,grade_level"
    )
    parser.add_argument(
        "--grades",
        type=Path,
        help="CSV: student_id,subject,score[,max_score][,recorded_at]",
    )
    add_database_url(parser)
    args = parser.parse_args(argv)
    if args.students is None and args.grades is None:
        parser.error("give --students, --grades or both")
    url = database_url(args.database_url)
    if url is None:
        return 2
    texts: dict[str, bytes] = {}
    for path in (args.students, args.grades):
        if path is not None:
            try:
                texts[str(path)] = path.read_bytes()
            except OSError as exc:
                print(f"error: cannot read {path}: {exc.strerror}", file=sys.stderr)
                return 2
    # One bulk load of acyclic rows: collections over 100,000s of live objects
    # would only cost time (~0.06 s per 100,000 grades).
    gc.disable()
    return asyncio.run(_run(url, args.students, args.grades, texts))


async def _run(
    url: str,
    students_path: Path | None,
    grades_path: Path | None,
    texts: dict[str, bytes],
) -> int:
    started = time.perf_counter()
    students: ParsedCsv[NewStudent] = (
        parse_students_csv(texts[str(students_path)])
        if students_path is not None
        else ParsedCsv()
    )
    grades: ParsedCsv[NewGrade] = (
        parse_grades_csv(texts[str(grades_path)])
        if grades_path is not None
        else ParsedCsv()
    )
    students_name = students_path.name if students_path else "students.csv"
    grades_name = grades_path.name if grades_path else "grades.csv"
    database = create_database(url)
    try:
        if await migrated(database) is None:
            return 1
        if not (students.ok and grades.ok):
            # Report what the database would add too, so one run lists every bad row.
            async with database.sessions() as session:
                more_students, more_grades = await find_conflicts(
                    session,
                    students.rows,
                    grades.rows,
                    student_lines=students.lines,
                    grade_lines=grades.lines,
                    known_student_ids=students.student_ids,
                )
            _report(students_name, students.problems + more_students)
            _report(grades_name, grades.problems + more_grades)
            return 1
        try:
            summary = await _import_with_progress(database, students, grades)
        except ImportRejected as exc:
            _report(students_name, exc.student_problems)
            _report(grades_name, exc.grade_problems)
            return 1
    finally:
        await database.dispose()
    elapsed = time.perf_counter() - started
    print(
        f"imported {summary.students} students and {summary.grades} grades "
        f"in {elapsed:.2f} s"
    )
    return 0


async def _import_with_progress(
    database: Database, students: ParsedCsv[NewStudent], grades: ParsedCsv[NewGrade]
) -> ImportSummary:
    # disable=None: a bar on a terminal, silence when stderr is a file or a pipe.
    with tqdm(
        total=len(students.rows) + len(grades.rows),
        unit="rows",
        file=sys.stderr,
        disable=None,
    ) as bar:
        return await import_rows(
            database,
            students.rows,
            grades.rows,
            student_lines=students.lines,
            grade_lines=grades.lines,
            progress=bar.update,
        )


def _report(source: str, problems: Iterable[RowProblem]) -> None:
    for problem in sort_problems(problems):
        print(problem.describe(source), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main(prog="python -m cli.importer"))
