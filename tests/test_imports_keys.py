"""gradesImport's idempotencyKey, kept like gradesAdd's: the same key and the same
content give the first job back (replayed), another content is an
IdempotencyKeyReusedError; keys are per caller, and apart from gradesAdd's."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from resolvers.viewer import Viewer
from tests.factories import create_student
from tests.factories.imports import (
    GRADES_IMPORT,
    count_rows,
    csv_of,
    start,
    wait_for_job,
)
from tests.factories.roles import ADMIN, run

ROWS = [("KEY-1", "Math", 71.0), ("KEY-1", "Art", 88.0)]
OTHER_ADMIN = Viewer(identity="user:other-admin", role="admin", anonymous=False)
GRADES_ADD = """
mutation($key: String) {
  gradesAdd(input: [{studentId: "KEY-1", subject: "Bio", score: 50}],
            idempotencyKey: $key) {
    __typename ... on GradesAddSuccess { inserted replayed }
  }
}
"""


@pytest.fixture
async def student(api: Any) -> str:
    await create_student(api, studentId="KEY-1")
    return "KEY-1"


async def upload(api: Any, text: str, key: str) -> dict[str, Any]:
    operations = {
        "query": GRADES_IMPORT,
        "variables": {"file": None, "csv": None, "key": key},
    }
    response = await api.http.post(
        "/graphql",
        data={
            "operations": json.dumps(operations),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        files={"0": ("grades.csv", text.encode(), "text/csv")},
        headers={"X-GradePulse-Upload": "1"},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["data"]["gradesImport"]
    return result


async def test_the_same_key_and_content_give_the_first_job_back(
    api: Any, student: str
) -> None:
    first = await start(api, csv=csv_of(ROWS), key="load-1")
    done = await wait_for_job(api, first["job"]["id"])

    again = await start(api, csv=csv_of(ROWS), key="load-1")
    # The same bytes as a file: the content is what is compared.
    uploaded = await upload(api, csv_of(ROWS), "load-1")

    assert (first["replayed"], done["status"]) == (False, "SUCCEEDED")
    assert again == {"__typename": "GradesImportSuccess", "replayed": True, "job": done}
    assert uploaded == again
    assert await count_rows(api, "import_jobs") == 1
    assert await count_rows(api, "grades") == 2


async def test_the_same_key_with_other_content_is_refused(
    api: Any, student: str
) -> None:
    first = await start(api, csv=csv_of(ROWS), key="load-2")
    await wait_for_job(api, first["job"]["id"])

    reused = await start(api, csv=csv_of(ROWS[:1]), key="load-2")

    assert reused == {
        "__typename": "IdempotencyKeyReusedError",
        "message": "idempotency key 'load-2' was already used for a different payload",
    }
    assert await count_rows(api, "import_jobs") == 1
    assert await count_rows(api, "grades") == 2


async def test_keys_are_each_caller_s_own(api: Any, student: str) -> None:
    document = (
        "mutation($csv: String!, $key: String) { gradesImport(csv: $csv, "
        "idempotencyKey: $key) { ... on GradesImportSuccess { replayed job { id } } "
        "... on IdempotencyKeyReusedError { message } } }"
    )
    mine, errors = await run(api, ADMIN, document, csv=csv_of(ROWS), key="shared")
    assert errors == []
    await wait_for_job(api, mine["gradesImport"]["job"]["id"])

    # Another caller's key of the same name, even with other content, is theirs.
    theirs, errors = await run(
        api, OTHER_ADMIN, document, csv=csv_of(ROWS[:1]), key="shared"
    )

    assert errors == []
    assert theirs["gradesImport"]["replayed"] is False
    assert theirs["gradesImport"]["job"]["id"] != mine["gradesImport"]["job"]["id"]
    await wait_for_job(api, theirs["gradesImport"]["job"]["id"])
    assert await count_rows(api, "grades") == 3


async def test_grades_add_keys_and_import_keys_are_apart(
    api: Any, student: str
) -> None:
    added, errors = await run(api, ADMIN, GRADES_ADD, key="same")
    assert errors == []
    document = (
        "mutation($csv: String!) { gradesImport(csv: $csv, idempotencyKey: "
        '"same") { __typename ... on GradesImportSuccess { replayed job { id } } } }'
    )

    imported, errors = await run(api, ADMIN, document, csv=csv_of(ROWS))
    await wait_for_job(api, imported["gradesImport"]["job"]["id"])
    replayed, _ = await run(api, ADMIN, GRADES_ADD, key="same")

    assert errors == []
    assert imported["gradesImport"]["replayed"] is False
    assert added["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 1,
        "replayed": False,
    }
    assert replayed["gradesAdd"] == {
        "__typename": "GradesAddSuccess",
        "inserted": 1,
        "replayed": True,
    }
    assert await count_rows(api, "grades") == 3


@pytest.mark.parametrize(("key", "code"), [("", "REQUIRED"), ("k" * 201, "TOO_LONG")])
async def test_a_bad_key_is_invalid_input(
    api: Any, student: str, key: str, code: str
) -> None:
    result = await start(api, csv=csv_of(ROWS), key=key)

    assert result == {
        "__typename": "InvalidInputError",
        "message": "idempotencyKey must be 1 to 200 characters",
        "field": "idempotencyKey",
        "code": code,
    }
    assert await count_rows(api, "import_jobs") == 0


async def test_two_requests_with_one_key_at_once_start_one_job(
    api: Any, student: str
) -> None:
    results = await asyncio.gather(
        *(start(api, csv=csv_of(ROWS), key="racing") for _ in range(4))
    )

    assert {r["job"]["id"] for r in results} == {results[0]["job"]["id"]}
    assert sorted(r["replayed"] for r in results) == [False, True, True, True]
    await wait_for_job(api, results[0]["job"]["id"])
    assert await count_rows(api, "import_jobs") == 1
    assert await count_rows(api, "grades") == 2
