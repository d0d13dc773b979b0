"""Analytics figures print rounded to 4 decimals (computed at full precision), the
same on the compiled plans and on the general executor."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from db import analytics as db_analytics
from tests.factories import add_grade, create_student

# The exact mean is 90; summed as the summaries add them the floating-point sum
# lands an ulp below 360, so the full-precision average is 89.99999999999999.
NOISY_SCORES = (("04", 93.2), ("03", 98.0), ("02", 76.1), ("01", 92.7))
FIGURES = """
query Figures($id: String!) {
  studentAnalytics(studentId: $id) {
    average gpa trendPerMonth percentile subjects { average min max latest }
  }
  classAnalytics { mean median stdDev min max top { average } }
}
"""
# A number with more than 4 decimals.
LONG_DECIMALS = re.compile(r"\d\.\d{5,}")


@pytest.mark.parametrize("query_plans", [True, False], ids=["planned", "general"])
async def test_a_figure_with_float_noise_prints_rounded(
    make_api: Any, scratch_url: str, query_plans: bool
) -> None:
    api = await make_api(scratch_url, query_plans=query_plans)
    student = await create_student(api, gradeLevel=4)
    sid = student["studentId"]
    for day, score in NOISY_SCORES:
        await add_grade(
            api, sid, subject="Math", score=score, recordedAt=f"2025-10-{day}T09:00Z"
        )
    async with api.services.database.sessions() as session:
        (stats,) = await db_analytics.student_stats_by_student_ids(session, [sid])
        whole = await db_analytics.class_stats(session, None, None, None)

    response = await api.http.post(
        "/graphql", json={"query": FIGURES, "variables": {"id": sid}}
    )

    # given figures with float noise at full precision
    assert stats.average == 89.99999999999999
    assert stats.subjects[0].average == 89.99999999999999
    assert whole.mean is not None and whole.std_dev is not None
    assert round(stats.trend_per_month or 0.0, 4) != stats.trend_per_month
    # then the API shows them rounded to 4 decimals
    body = response.json()
    assert "errors" not in body, body
    assert body["data"] == {
        "studentAnalytics": {
            "average": 90.0,
            "gpa": 4.0,
            "trendPerMonth": round(stats.trend_per_month or 0.0, 4),
            "percentile": 0.0,
            "subjects": [{"average": 90.0, "min": 76.1, "max": 98.0, "latest": 93.2}],
        },
        "classAnalytics": {
            "mean": round(whole.mean, 4),
            "median": 92.95,
            "stdDev": round(whole.std_dev, 4),
            "min": 76.1,
            "max": 98.0,
            "top": [{"average": 90.0}],
        },
    }
    assert '"average":90.0' in response.text
    # (money in extensions.cost keeps its 6 decimals)
    assert LONG_DECIMALS.findall(json.dumps(body["data"])) == []
