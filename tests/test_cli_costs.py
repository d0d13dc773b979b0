"""`gradepulse costs report`: costs.csv as the server writes it, summed exactly per
day, ISO week or month, since a date, as a table, CSV or JSON; bad input is one line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.main import main
from monitoring.costs import COSTS_HEADER, format_row
from monitoring.snapshot import CostRow

ROWS = [
    # (period start, db_queries, api_requests, db_cost, api_cost)
    ("2024-01-14T23:00:00", 10, 100, 0.001, 0.001),  # a Sunday: ISO week 2
    ("2024-01-15T10:00:00", 150, 1200, 0.015, 0.012),
    ("2024-01-15T11:00:00", 1, 3, 0.0001, 0.00003),
    ("2024-02-01T00:00:00", 5, 0, 0.0005, 0.0),
]


def costs_csv(path: Path, rows: list[tuple[str, int, int, float, float]]) -> Path:
    """The file as the server's sink writes it (monitoring.costs.format_row)."""
    lines = [COSTS_HEADER]
    for start, queries, requests, db_cost, api_cost in rows:
        lines.append(
            format_row(
                CostRow(
                    timestamp=datetime.fromisoformat(start).replace(tzinfo=UTC),
                    environment="development",
                    db_queries=queries,
                    api_requests=requests,
                    db_cost=db_cost,
                    api_cost=api_cost,
                    total_cost=round(db_cost + api_cost, 6),
                )
            )
        )
    path.write_text("".join(line + "\n" for line in lines))
    return path


def report(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["costs", "report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_by_day_is_a_table_with_the_total(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = costs_csv(tmp_path / "costs.csv", ROWS)

    code, out, err = report(capsys, "--file", str(path))

    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "period      rows  db_queries  api_requests   db_cost  api_cost  total_cost",
        "2024-01-14     1          10           100  0.001000  0.001000    0.002000",
        "2024-01-15     2         151          1203  0.015100  0.012030    0.027130",
        "2024-02-01     1           5             0  0.000500  0.000000    0.000500",
        "total          4         166          1303  0.016600  0.013030    0.029630",
    ]


def test_by_week_as_csv_counts_iso_weeks_from_monday(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = costs_csv(tmp_path / "costs.csv", ROWS)

    code, out, err = report(
        capsys, "--file", str(path), "--by", "week", "--format", "csv"
    )

    assert (code, err) == (0, "")
    assert out == (
        "period,rows,db_queries,api_requests,db_cost,api_cost,total_cost\n"
        "2024-W02,1,10,100,0.001000,0.001000,0.002000\n"
        "2024-W03,2,151,1203,0.015100,0.012030,0.027130\n"
        "2024-W05,1,5,0,0.000500,0.000000,0.000500\n"
    )


def test_by_month_since_a_date_as_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = costs_csv(tmp_path / "costs.csv", ROWS)

    code, out, err = report(
        capsys,
        "--file",
        str(path),
        "--by",
        "month",
        "--format",
        "json",
        "--since",
        "2024-01-15",
    )

    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "by": "month",
        "since": "2024-01-15",
        "periods": [
            {
                "period": "2024-01",
                "rows": 2,
                "db_queries": 151,
                "api_requests": 1203,
                "db_cost": 0.0151,
                "api_cost": 0.01203,
                "total_cost": 0.02713,
            },
            {
                "period": "2024-02",
                "rows": 1,
                "db_queries": 5,
                "api_requests": 0,
                "db_cost": 0.0005,
                "api_cost": 0.0,
                "total_cost": 0.0005,
            },
        ],
        "total": {
            "period": "total",
            "rows": 3,
            "db_queries": 156,
            "api_requests": 1203,
            "db_cost": 0.0156,
            "api_cost": 0.01203,
            "total_cost": 0.02763,
        },
    }


def test_sums_are_exact_over_many_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """10,000 rows of $0.000001 each: exactly $0.010000 (floats would drift)."""
    rows = [
        (
            f"2024-03-{1 + hour // 24 % 28:02d}T{hour % 24:02d}:00:00",
            0,
            1,
            0.0,
            0.000001,
        )
        for hour in range(10_000)
    ]
    path = costs_csv(tmp_path / "costs.csv", rows)

    code, out, err = report(
        capsys, "--file", str(path), "--by", "month", "--format", "csv"
    )

    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == ["2024-03,10000,0,10000,0.000000,0.010000,0.010000"]


def test_reads_costs_csv_path_from_the_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "operator").mkdir()
    path = costs_csv(tmp_path / "operator" / "costs.csv", ROWS[:1])
    monkeypatch.setenv("COSTS_CSV_PATH", str(path))

    code, out, err = report(capsys, "--format", "csv")

    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == ["2024-01-14,1,10,100,0.001000,0.001000,0.002000"]


@pytest.mark.parametrize(
    ("rows", "argv", "expected"),
    [
        ([], (), "no cost rows in {path}\n"),
        (ROWS, ("--since", "2030-01-01"), "no cost rows in {path} since 2030-01-01\n"),
        (
            [],
            ("--format", "json"),
            '{"by": "day", "since": null, "periods": [], "total": {"period": "total", '
            '"rows": 0, "db_queries": 0, "api_requests": 0, "db_cost": 0.0, '
            '"api_cost": 0.0, "total_cost": 0.0}}\n',
        ),
        (
            [],
            ("--format", "csv"),
            "period,rows,db_queries,api_requests,db_cost,api_cost,total_cost\n",
        ),
    ],
)
def test_no_rows(
    rows: list[tuple[str, int, int, float, float]],
    argv: tuple[str, ...],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = costs_csv(tmp_path / "costs.csv", rows)

    code, out, err = report(capsys, "--file", str(path), *argv)

    assert (code, out, err) == (0, expected.replace("{path}", str(path)), "")


@pytest.mark.parametrize(
    ("since", "message"),
    [
        ("2024-02-30", "'2024-02-30'"),
        ("yesterday", "'yesterday'"),
        ("2024-1-5", "'2024-1-5'"),
        ("20240115", "'20240115'"),
        ("2024-01-15T00:00:00", "'2024-01-15T00:00:00'"),
    ],
)
def test_a_bad_date_is_one_line_and_exit_2(
    since: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = costs_csv(tmp_path / "costs.csv", ROWS)

    code, out, err = report(capsys, "--file", str(path), "--since", since)

    assert (code, out) == (2, "")
    assert err == (
        "gradepulse costs report: error: argument --since: not a date (YYYY-MM-DD): "
        f"{message}\n"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ("--by", "year"),
            "argument --by: invalid choice: 'year' (choose from "
            "'day', 'week', 'month')",
        ),
        (
            ("--format", "xml"),
            "argument --format: invalid choice: 'xml' (choose from "
            "'table', 'csv', 'json')",
        ),
    ],
)
def test_bad_choices_are_one_line_and_exit_2(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = report(capsys, *argv)

    assert (code, out, err) == (2, "", f"gradepulse costs report: error: {message}\n")


def test_a_missing_file_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = report(capsys, "--file", str(tmp_path / "none.csv"))

    assert (code, out) == (1, "")
    assert err == (
        f"error: {tmp_path / 'none.csv'} does not exist: the server writes it when it "
        "closes its first cost period\n"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("time,cost\n", "line 1: expected the header " + COSTS_HEADER),
        (
            COSTS_HEADER + "\n2024-01-15T10:00:00,development,1,2,0.1,0.1\n",
            "line 2: 6 fields, not 7",
        ),
        (
            COSTS_HEADER + "\n2024-01-15 10:00,development,1,2,0.1,0.1,0.2\n",
            "line 2: '2024-01-15 10:00' is not a timestamp (YYYY-MM-DDTHH:MM:SS)",
        ),
        (
            COSTS_HEADER + "\n2024-01-15T10:00:00,development,1,2,0.1,0.1,0.2\n"
            "2024-01-15T11:00:00,development,x,2,0.1,0.1,0.2\n",
            "line 3: db_queries 'x' is not a number",
        ),
        (
            COSTS_HEADER + "\n2024-01-15T10:00:00,development,1,2,0.1,NaN,0.2\n",
            "line 2: api_cost 'NaN' is not a number",
        ),
    ],
)
def test_a_malformed_file_names_the_line_and_exits_1(
    text: str, problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "costs.csv"
    path.write_text(text)

    code, out, err = report(capsys, "--file", str(path))

    assert (code, out, err) == (1, "", f"error: {path}: {problem}\n")
