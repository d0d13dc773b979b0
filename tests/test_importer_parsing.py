"""CSV import parsing: per-row problems with file lines."""

from __future__ import annotations

from datetime import datetime

import pytest

from db.csvrows import RowProblem, parse_grades_csv, parse_students_csv
from db.validation import (
    InputErrorCode,
    NewGrade,
    NewStudent,
    grade_problems,
)
from tests.factories.importer import BAD_GRADES, GOOD_GRADES, GOOD_STUDENTS, NOW

# --- parsing -----------------------------------------------------------------------


def test_parses_students_with_trimmed_fields_and_lower_case_email() -> None:
    parsed = parse_students_csv(GOOD_STUDENTS)

    assert parsed.problems == []
    assert parsed.rows == [
        NewStudent("S10001", "Ada Lovelace", "ada@school.example", 9),
        NewStudent("S10002", "Hopper, Grace", "grace@school.example", 12),
    ]
    assert parsed.lines == [2, 3]


def test_parses_grades_with_defaults_and_utc_times() -> None:
    parsed = parse_grades_csv(GOOD_GRADES, now=NOW)

    assert parsed.problems == []
    assert parsed.rows == [
        NewGrade("S10001", "Math", 95.5, 100.0, datetime(2025, 10, 1, 8, 0)),
        NewGrade("S10002", "Science", 18.0, 20.0, datetime(2025, 10, 1, 8, 30)),
        NewGrade("S00001", "Art", 70.0, 100.0, datetime(2025, 10, 2, 9, 15)),
        NewGrade("S10001", "History", 88.0, 100.0, NOW),
    ]
    assert parsed.lines == [2, 3, 4, 5]
    assert parsed.student_ids == {"S10001", "S10002", "S00001"}


def test_reports_row_problems_with_index_line_and_camel_case_field() -> None:
    parsed = parse_grades_csv(BAD_GRADES, now=NOW)

    assert parsed.problems[:2] == [
        RowProblem(
            1,
            3,
            "score",
            InputErrorCode.OUT_OF_RANGE,
            "score must be between 0 and 100",
        ),
        RowProblem(
            2,
            4,
            "score",
            InputErrorCode.INVALID_FORMAT,
            "score must be a number, not 'abc'",
        ),
    ]
    # The blank line 5 is no row: line 6 is data row 3.
    assert [(p.index, p.line) for p in parsed.problems[2:]] == [
        (4, 7),
        (5, 8),
        (7, 10),
        (8, 11),
        (8, 11),
    ]
    assert [(g.student_id, g.subject) for g in parsed.rows] == [
        ("S10001", "Math"),
        ("S99999", "Art"),
        ("S10002", "Math"),
    ]
    assert parsed.lines == [2, 6, 9]


def test_counts_lines_of_quoted_values_that_span_lines() -> None:
    text = (
        "student_id,name,email,grade_level\n"
        'S1,"Ada\nLovelace",ada@school.example,9\n'
        "S2,Grace,grace@school.example,0\n"
    )

    parsed = parse_students_csv(text)

    assert [p.describe("students.csv") for p in parsed.problems] == [
        "students.csv line 4: gradeLevel: OUT_OF_RANGE: "
        "gradeLevel must be between 1 and 12"
    ]
    assert parsed.rows == [NewStudent("S1", "Ada\nLovelace", "ada@school.example", 9)]


def test_accepts_bytes_with_a_byte_order_mark_and_columns_in_any_order() -> None:
    data = "\ufeffscore,subject,student_id\r\n80,Art,S1\r\n".encode()

    parsed = parse_grades_csv(data, now=NOW)

    assert parsed.problems == []
    assert parsed.rows == [NewGrade("S1", "Art", 80.0, 100.0, NOW)]


def test_reports_the_line_of_a_byte_that_is_not_utf_8() -> None:
    parsed = parse_grades_csv(b"student_id,subject,score\nS1,Art,5\nS2,\xff,5\n")

    assert parsed.rows == []
    assert parsed.problems == [
        RowProblem(
            None,
            3,
            "file",
            InputErrorCode.INVALID_FORMAT,
            "the file is not UTF-8 text (byte 0xff)",
        )
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            "the header is missing; "
            "expected student_id,subject,score,max_score,recorded_at",
        ),
        (
            "student_id,subject,scores\nS1,Art,80\n",
            "unknown column 'scores', missing column 'score'; "
            "expected student_id,subject,score,max_score,recorded_at",
        ),
        (
            "student_id,subject,score,score\n",
            "column 'score' appears twice; "
            "expected student_id,subject,score,max_score,recorded_at",
        ),
    ],
)
def test_rejects_a_wrong_header(text: str, message: str) -> None:
    parsed = parse_grades_csv(text)

    assert parsed.rows == []
    assert parsed.problems == [
        RowProblem(None, 1, "header", InputErrorCode.INVALID_FORMAT, message)
    ]


@pytest.mark.parametrize(
    ("student_id", "subject", "score", "max_score"),
    [
        ("S1", "Math", "0", ""),
        ("S1", "Math", "100", ""),
        ("S1", "Math", "100.0001", ""),
        ("S1", "Math", "-0.0001", ""),
        ("S1", "Math", "5", "5"),
        ("S1", "Math", "5", "4.9"),
        ("S1", "Math", "0", "0"),
        ("S1", "Math", "0", "-1"),
        ("S1", "Math", "inf", "inf"),
        ("S1", "Math", "nan", ""),
        ("S1", "Math", "1", "nan"),
        ("S1", "Math", "-inf", ""),
        ("S1", "Math", " 7 ", " 10 "),
        ("S1", "Math", "1e2", "1e2"),
        ("", "Math", "50", ""),
        ("  ", "Math", "50", ""),
        ("S1", "", "50", ""),
        ("S" * 64, "M" * 64, "50", ""),
        ("S" * 65, "Math", "50", ""),
        ("S1", "M" * 65, "50", ""),
        (" S1 ", " Math ", "50", ""),
        ("S\x001", "Math", "50", ""),
        ("S1", "Ma\x00th", "50", ""),
    ],
)
def test_fast_path_accepts_exactly_what_validation_accepts(
    student_id: str, subject: str, score: str, max_score: str
) -> None:
    row = ",".join(f'"{v}"' for v in (student_id, subject, score, max_score, ""))
    text = f"student_id,subject,score,max_score,recorded_at\n{row}\n"

    parsed = parse_grades_csv(text, now=NOW)

    expected = grade_problems(
        student_id=student_id,
        subject=subject,
        score=float(score),
        max_score=float(max_score) if max_score.strip() else 100.0,
    )
    # The same problems (in column order here, in validation's order there).
    found = sorted((p.field, p.code.value, p.message) for p in parsed.problems)
    assert found == sorted((p.field, p.code.value, p.message) for p in expected)
    assert len(parsed.rows) == (0 if expected else 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-10-01T08:00:00Z", datetime(2025, 10, 1, 8, 0)),
        ("2025-10-01T08:00:00z", datetime(2025, 10, 1, 8, 0)),
        ("2025-10-01T08:00:00.250Z", datetime(2025, 10, 1, 8, 0, 0, 250000)),
        ("2025-10-01T08:00:00-05:00", datetime(2025, 10, 1, 13, 0)),
        ("2025-10-01T01:00:00+02:00", datetime(2025, 9, 30, 23, 0)),
        ("2025-10-01 08:00", datetime(2025, 10, 1, 8, 0)),
        ("2025-10-01", datetime(2025, 10, 1, 0, 0)),
        (" 2025-10-01T08:00:00Z ", datetime(2025, 10, 1, 8, 0)),
    ],
)
def test_reads_iso_8601_times_as_naive_utc(text: str, expected: datetime) -> None:
    parsed = parse_grades_csv(
        f"student_id,subject,score,recorded_at\nS1,Art,50,{text}\n", now=NOW
    )

    assert parsed.problems == []
    assert parsed.rows[0].recorded_at == expected


@pytest.mark.parametrize(
    "text", ["2025-13-01", "01/10/2025", "2025-10-01T08:00+02:00Z"]
)
def test_rejects_times_that_are_not_iso_8601(text: str) -> None:
    parsed = parse_grades_csv(
        f"student_id,subject,score,recorded_at\nS1,Art,50,{text}\n"
    )

    assert parsed.rows == []
    assert [p.describe("g.csv") for p in parsed.problems] == [
        "g.csv line 2: recordedAt: INVALID_FORMAT: "
        f"recordedAt must be an ISO 8601 date and time, not {text!r}"
    ]
