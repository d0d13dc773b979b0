"""CSV rows for import: parse and validate students.csv and grades.csv, no database."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from db.errors import RowProblem
from db.models import STUDENT_ID_MAX, SUBJECT_MAX
from db.validation import (
    FieldProblem,
    InputErrorCode,
    NewGrade,
    NewStudent,
    grade_problems,
    new_grade,
    new_student,
    score_problems,
    student_problems,
    to_naive_utc,
    utcnow,
)

if TYPE_CHECKING:
    from _csv import Reader

STUDENT_COLUMNS = ("student_id", "name", "email", "grade_level")
GRADE_COLUMNS = ("student_id", "subject", "score", "max_score", "recorded_at")
_GRADE_REQUIRED = ("student_id", "subject", "score")
DEFAULT_MAX_SCORE = 100.0

Source = str | bytes | Iterable[str]
RowT = TypeVar("RowT", NewStudent, NewGrade)


@dataclass(frozen=True, slots=True)
class ParsedCsv(Generic[RowT]):
    """The valid rows (file order) with their file lines, and every problem found.

    `student_ids` holds every non-blank student id cell in the file, valid row or
    not, so that a grade for a student whose row is broken is not also NOT_FOUND.
    """

    rows: list[RowT] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    student_ids: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.problems


def parse_students_csv(source: Source) -> ParsedCsv[NewStudent]:
    """Parse `student_id,name,email,grade_level` rows; duplicates in the file are
    DUPLICATE on their second and later lines."""
    parsed: ParsedCsv[NewStudent] = ParsedCsv()
    table = _open(source, STUDENT_COLUMNS, STUDENT_COLUMNS, parsed.problems)
    if table is None:
        return parsed
    at = table.columns
    i_id, i_name, i_email, i_level = (
        at["student_id"],
        at["name"],
        at["email"],
        at["grade_level"],
    )
    first_line_of_id: dict[str, int] = {}
    first_line_of_email: dict[str, int] = {}
    for index, line, cells in table.rows(parsed.problems):
        student_id, name, email = cells[i_id], cells[i_name], cells[i_email]
        if student_id.strip():
            parsed.student_ids.add(student_id.strip())
        level, level_problem = _whole_number(cells[i_level], "gradeLevel")
        problems = student_problems(student_id=student_id, name=name, email=email)
        if level_problem is None:
            problems += student_problems(grade_level=level)
        else:
            problems.append(level_problem)
        if not problems and level is not None:
            student = new_student(student_id, name, email, level)
            problems = _first_seen(
                student.student_id, "studentId", line, first_line_of_id
            ) + _first_seen(student.email, "email", line, first_line_of_email)
            if not problems:
                parsed.rows.append(student)
                parsed.lines.append(line)
                continue
        parsed.problems.extend(_at(index, line, problems))
    return parsed


def parse_grades_csv(
    source: Source, *, now: datetime | None = None
) -> ParsedCsv[NewGrade]:
    """Parse `student_id,subject,score[,max_score][,recorded_at]` rows: a blank
    max_score is 100, a blank recorded_at is `now` (default: the current UTC time),
    ISO 8601 with `Z` or an offset is converted to UTC and a naive time is UTC."""
    parsed: ParsedCsv[NewGrade] = ParsedCsv()
    table = _open(source, GRADE_COLUMNS, _GRADE_REQUIRED, parsed.problems)
    if table is None:
        return parsed
    at = table.columns
    i_id, i_subject, i_score = at["student_id"], at["subject"], at["score"]
    i_max, i_time = at.get("max_score"), at.get("recorded_at")
    default_time = to_naive_utc(now) if now is not None else utcnow()
    rows, lines, problems = parsed.rows, parsed.lines, parsed.problems
    reader, width = table.reader, table.width
    fromisoformat = datetime.fromisoformat
    id_max, subject_max, infinity = STUDENT_ID_MAX, SUBJECT_MAX, _INFINITY
    rejected = 0  # rows with problems: a row's index is len(rows) + rejected
    previous = reader.line_num
    try:
        for cells in reader:
            # A quoted value may span lines: a row starts after the previous one.
            line, previous = previous + 1, reader.line_num
            if len(cells) == width:
                raw_id, raw_subject = cells[i_id], cells[i_subject]
                max_text = "" if i_max is None else cells[i_max]
                time_text = "" if i_time is None else cells[i_time]
                # The fast path for 100,000-row files: a row that passes these
                # cheap checks is one that db.validation accepts; any other row
                # goes through db.validation below, which words every problem.
                # A rule added to check_text or score_problems belongs here too:
                # test_fast_path_accepts_exactly_what_validation_accepts.
                try:
                    score = float(cells[i_score])
                    max_score = float(max_text) if max_text else DEFAULT_MAX_SCORE
                    if not time_text:
                        recorded_at = default_time
                    elif time_text[-1] == "Z":
                        recorded_at = fromisoformat(time_text[:-1])
                    else:
                        recorded_at = to_naive_utc(fromisoformat(time_text))
                except ValueError:
                    pass
                else:
                    student_id, subject = raw_id.strip(), raw_subject.strip()
                    if (
                        student_id
                        and subject
                        and len(raw_id) <= id_max
                        and len(raw_subject) <= subject_max
                        and "\x00" not in raw_id
                        and "\x00" not in raw_subject
                        and 0.0 < max_score < infinity
                        and 0.0 <= score <= max_score
                        and recorded_at.tzinfo is None
                    ):
                        rows.append(
                            NewGrade(student_id, subject, score, max_score, recorded_at)
                        )
                        lines.append(line)
                        continue
            elif _blank(cells):
                continue
            index = len(rows) + rejected
            if len(cells) != width:
                problems.append(_width_problem(index, line, width, len(cells)))
                rejected += 1
                continue
            if _blank(cells):
                continue
            raw_id, raw_subject = cells[i_id], cells[i_subject]
            max_text = "" if i_max is None else cells[i_max]
            time_text = "" if i_time is None else cells[i_time]
            if raw_id.strip():
                parsed.student_ids.add(raw_id.strip())
            row_problems = _grade_row_problems(
                raw_id, raw_subject, cells[i_score], max_text, time_text
            )
            if row_problems:
                problems.extend(_at(index, line, row_problems))
                rejected += 1
            else:  # valid after all, e.g. a time with spaces around it
                rows.append(
                    new_grade(
                        raw_id,
                        raw_subject,
                        float(cells[i_score]),
                        float(max_text) if max_text.strip() else DEFAULT_MAX_SCORE,
                        _parse_time(time_text) if time_text.strip() else default_time,
                    )
                )
                lines.append(line)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(_unreadable(len(rows) + rejected, previous + 1, exc))
    parsed.student_ids.update({r.student_id for r in rows})
    return parsed


def _grade_row_problems(
    student_id: str, subject: str, score_text: str, max_text: str, time_text: str
) -> list[FieldProblem]:
    """Every problem with one grade row, in column order, worded by db.validation."""
    score, score_problem = _number(score_text, "score")
    max_score, max_problem = (
        _number(max_text, "maxScore") if max_text.strip() else (DEFAULT_MAX_SCORE, None)
    )
    time_problem = _time_problem(time_text, "recordedAt") if time_text.strip() else None
    problems = grade_problems(student_id=student_id, subject=subject)
    if score_problem is None and max_problem is None:
        problems += score_problems(score, max_score)
    elif max_problem is None:
        # The score is not a number: still say what is wrong with maxScore.
        problems += [p for p in score_problems(0.0, max_score) if p.field == "maxScore"]
    problems += [p for p in (score_problem, max_problem, time_problem) if p]
    return sorted(problems, key=_grade_order)


def sort_problems(problems: Iterable[RowProblem]) -> list[RowProblem]:
    """File order: by line, then as found."""
    return sorted(problems, key=lambda p: p.line)


def line_of(index: int, lines: Sequence[int] | None) -> int:
    """The file line of data row `index`: header on line 1, one row per line."""
    return lines[index] if lines is not None else index + 2


# --- helpers ---------------------------------------------------------------------

_INFINITY = float("inf")
_FORMAT = InputErrorCode.INVALID_FORMAT

# Problems in one row are reported in the order of the grade columns.
_GRADE_ORDER = {
    name: position
    for position, name in enumerate(
        ("studentId", "subject", "score", "maxScore", "recordedAt")
    )
}


def _grade_order(problem: FieldProblem) -> int:
    return _GRADE_ORDER[problem.field]


@dataclass(slots=True)
class _Table:
    reader: Reader
    columns: dict[str, int]
    width: int

    def rows(self, problems: list[RowProblem]) -> Iterator[tuple[int, int, list[str]]]:
        """(index, line, cells) per data row; blank lines are skipped, rows of the
        wrong width and unreadable CSV become problems."""
        index = 0
        previous = self.reader.line_num
        while True:
            try:
                cells = next(self.reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                problems.append(_unreadable(index, previous + 1, exc))
                return
            # A quoted value may span lines: a row starts after the previous one.
            line, previous = previous + 1, self.reader.line_num
            if _blank(cells):
                continue
            if len(cells) != self.width:
                problems.append(_width_problem(index, line, self.width, len(cells)))
            else:
                yield index, line, cells
            index += 1


def _open(
    source: Source,
    columns: Sequence[str],
    required: Sequence[str],
    problems: list[RowProblem],
) -> _Table | None:
    """Read and check the header; None (with a problem) when it is unusable."""
    if isinstance(source, bytes):
        data = source
        try:
            source = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            byte = data[exc.start : exc.start + 1].hex()
            message = f"the file is not UTF-8 text (byte 0x{byte})"
            problems.append(RowProblem(None, line, "file", _FORMAT, message))
            return None
    lines = io.StringIO(source, newline="") if isinstance(source, str) else source
    reader = csv.reader(lines)
    expected = ",".join(columns)
    try:
        header = next(reader, None)
    except (csv.Error, UnicodeDecodeError) as exc:
        problems.append(_file_problem(1, f"unreadable CSV: {exc}"))
        return None
    if not header or not any(cell.strip() for cell in header):
        problems.append(_file_problem(1, f"the header is missing; expected {expected}"))
        return None
    header[0] = header[0].removeprefix("\ufeff")
    names = [cell.strip().lower() for cell in header]
    found: dict[str, int] = {}
    messages: list[str] = []
    for position, name in enumerate(names):
        if name not in columns:
            messages.append(f"unknown column {name!r}")
        elif name in found:
            messages.append(f"column {name!r} appears twice")
        else:
            found[name] = position
    messages += [f"missing column {name!r}" for name in required if name not in found]
    if messages:
        problems.append(_file_problem(1, f"{', '.join(messages)}; expected {expected}"))
        return None
    return _Table(reader=reader, columns=found, width=len(names))


def _blank(cells: list[str]) -> bool:
    """An empty line, or one of empty values only (`,,,` as spreadsheets write)."""
    return not "".join(cells).strip()


def _width_problem(index: int, line: int, width: int, found: int) -> RowProblem:
    return RowProblem(
        index,
        line,
        "row",
        InputErrorCode.INVALID_FORMAT,
        f"expected {width} values, found {found}",
    )


def _unreadable(index: int, line: int, exc: Exception) -> RowProblem:
    return RowProblem(
        index, line, "row", InputErrorCode.INVALID_FORMAT, f"unreadable CSV: {exc}"
    )


def _file_problem(line: int, message: str) -> RowProblem:
    return RowProblem(None, line, "header", _FORMAT, message)


def _number(text: str, name: str) -> tuple[float | None, FieldProblem | None]:
    """The float in `text`; None when blank (validation says REQUIRED)."""
    text = text.strip()
    if not text:
        return None, None
    try:
        return float(text), None
    except ValueError:
        return None, FieldProblem(
            name,
            InputErrorCode.INVALID_FORMAT,
            f"{name} must be a number, not {text!r}",
        )


def _whole_number(text: str, name: str) -> tuple[int | None, FieldProblem | None]:
    text = text.strip()
    if not text:
        return None, None
    try:
        return int(text), None
    except ValueError:
        return None, FieldProblem(
            name,
            InputErrorCode.INVALID_FORMAT,
            f"{name} must be a whole number, not {text!r}",
        )


def _parse_time(text: str) -> datetime:
    """ISO 8601 to naive UTC; raises ValueError."""
    text = text.strip()
    if text.endswith(("Z", "z")):
        # The common case, and a cheap one: the wall time before Z is UTC already.
        value = datetime.fromisoformat(text[:-1])
        if value.tzinfo is None:
            return value
    return to_naive_utc(datetime.fromisoformat(text))


def _time_problem(text: str, name: str) -> FieldProblem | None:
    try:
        _parse_time(text)
    except ValueError:
        return FieldProblem(
            name,
            InputErrorCode.INVALID_FORMAT,
            f"{name} must be an ISO 8601 date and time, not {text.strip()!r}",
        )
    return None


def _first_seen(
    value: str, name: str, line: int, first_line: dict[str, int]
) -> list[FieldProblem]:
    seen = first_line.setdefault(value, line)
    if seen == line:
        return []
    return [
        FieldProblem(
            name,
            InputErrorCode.DUPLICATE,
            f"{name} {value!r} is already on line {seen}",
        )
    ]


def _at(index: int, line: int, problems: Iterable[FieldProblem]) -> list[RowProblem]:
    return [RowProblem(index, line, p.field, p.code, p.message) for p in problems]
