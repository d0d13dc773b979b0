"""`gradepulse costs report`: the totals of costs.csv per day, week or month."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path

from cli.parsing import Parser
from monitoring.costs_report import (
    PERIODS,
    CostsFileError,
    Totals,
    read_costs,
    totals_by,
)

PROG = "gradepulse costs"
FORMATS = ("table", "csv", "json")
HEADER = (
    "period",
    "rows",
    "db_queries",
    "api_requests",
    "db_cost",
    "api_cost",
    "total_cost",
)


def _date(text: str) -> date:
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Reports on costs.csv (COSTS_CSV_PATH), the hourly cost rows "
        "the server writes.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="report")
    report = commands.add_parser(
        "report",
        help="totals per day, week or month",
        description="Sum the rows of costs.csv per day, ISO week (from Monday) or "
        "month, in UTC, by the start of each row's period: queries, requests and "
        "dollars (6 decimals), with the overall total.",
    )
    report.add_argument(
        "--since",
        type=_date,
        metavar="DATE",
        help="only the rows whose period starts on or after DATE (YYYY-MM-DD, UTC)",
    )
    report.add_argument(
        "--by", choices=PERIODS, default="day", help="the period (default: day)"
    )
    report.add_argument(
        "--format",
        choices=FORMATS,
        default="table",
        help="table (with a total line), csv or json (default: table)",
    )
    report.add_argument(
        "--file", type=Path, metavar="PATH", help="overrides COSTS_CSV_PATH"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    path = args.file
    if path is None:
        from settings import SettingsError, load_settings

        try:
            path = Path(load_settings().costs_csv_path)
        except SettingsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    try:
        lines = read_costs(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(
            f"error: {path} does not exist: the server writes it when it closes its "
            "first cost period",
            file=sys.stderr,
        )
        return 1
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        print(f"error: cannot read {path}: {reason}", file=sys.stderr)
        return 1
    except CostsFileError as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    periods, total = totals_by(lines, args.by, args.since)
    if args.format == "json":
        print(
            json.dumps(
                {
                    "by": args.by,
                    "since": args.since.isoformat() if args.since else None,
                    "periods": [_json(totals) for totals in periods],
                    "total": _json(total),
                }
            )
        )
    elif args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(_cells(totals) for totals in periods)
    elif not periods:
        since = f" since {args.since.isoformat()}" if args.since else ""
        print(f"no cost rows in {path}{since}")
    else:
        _table([HEADER, *(_cells(t) for t in periods), _cells(total)])
    return 0


def _money(value: Decimal) -> str:
    return f"{value:.6f}"


def _cells(totals: Totals) -> tuple[str, ...]:
    return (
        totals.period,
        str(totals.rows),
        str(totals.db_queries),
        str(totals.api_requests),
        _money(totals.db_cost),
        _money(totals.api_cost),
        _money(totals.total_cost),
    )


def _json(totals: Totals) -> dict[str, object]:
    return {
        "period": totals.period,
        "rows": totals.rows,
        "db_queries": totals.db_queries,
        "api_requests": totals.api_requests,
        # Money is a number rounded to 6 decimals wherever it is shown.
        "db_cost": float(round(totals.db_cost, 6)),
        "api_cost": float(round(totals.api_cost, 6)),
        "total_cost": float(round(totals.total_cost, 6)),
    }


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [
            cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
