"""The security review of the query limits: float page sizes, free heavy operations
(introspection copies, repeated fields), suggestions in production, operation
selection and database errors in the logs."""

from __future__ import annotations

import itertools
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from graphql import get_introspection_query, parse
from sqlalchemy.exc import IntegrityError

from resolvers import students
from server import gate as server_gate
from server.limits import QueryLimits, check_shape, measure
from tests.asgi_ws import AsgiWebSocket
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token
from tests.test_limits import cost_of, post, refusal, refused, ws_init, ws_start
from tests.test_ratelimit import budgeted_api, rate_limit

ROOT = Path(__file__).resolve().parent.parent
GRAPHQL_RESPONSE = "application/graphql-response+json"
PAGE_BY_VARIABLE = (
    "query Page($n: Int!) { students(first: $n) "
    "{ edges { node { studentId grades { score } } } } }"
)
# 1 for the connection; per edge 1 + node 1 + 20 estimated grades.
FULL_PAGE_COST = 1 + 100 * (1 + 1 + 20)
INTROSPECTION = get_introspection_query()
# The part of GraphiQL's query inside `__schema`, and the fragments it spreads.
SCHEMA_SELECTION = INTROSPECTION[
    INTROSPECTION.index("__schema") + len("__schema") : INTROSPECTION.index(
        "fragment FullType"
    )
].rstrip()[:-1]
INTROSPECTION_FRAGMENTS = INTROSPECTION[INTROSPECTION.index("fragment FullType") :]
TWO_OPERATIONS = """
    query Names { students(first: 2) { edges { node { name } } } }
    query Count { students { totalCount } }
"""


def copies(count: int, selection: str) -> str:
    return "{ " + " ".join([selection] * count) + " }"


# --- 1. page sizes as graphql-core coerces them -------------------------------------


@pytest.mark.parametrize("n", [100, 100.0])
async def test_an_integral_float_page_costs_as_its_int(seeded_api, n):
    status, body = await post(seeded_api, PAGE_BY_VARIABLE, {"n": n})

    assert "errors" not in body, body
    assert len(body["data"]["students"]["edges"]) == 100
    assert rate_limit(body)["cost"] == FULL_PAGE_COST


async def test_a_float_page_cannot_slip_under_max_cost(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=2000)

    extensions = await refused(api, PAGE_BY_VARIABLE, {"n": 100.0})

    assert extensions == {
        "code": "QUERY_TOO_COSTLY",
        "limit": 2000,
        "actual": FULL_PAGE_COST,
    }


async def test_a_float_page_is_charged_in_full_to_the_rate_budget(make_api, seeded_url):
    api, clock = await budgeted_api(make_api, seeded_url, capacity=5000)
    query = "query($n: Int!) { students(first: $n) { edges { node { studentId } } } }"

    _, body = await post(api, query, {"n": 100.0})

    assert len(body["data"]["students"]["edges"]) == 100
    assert rate_limit(body)["cost"] == 1 + 100 * 2
    assert rate_limit(body)["remaining"] == 5000 - 201


async def test_an_undeterminable_page_costs_the_largest_page(make_api, seeded_url):
    api = await make_api(seeded_url, max_cost=2000)
    # A nullable variable may stand for `first: Int! = 20`; null is refused at
    # execution, absent takes the default: costed as the largest page, and as 20.
    query = (
        "query Page($n: Int) { students(first: $n) "
        "{ edges { node { studentId grades { score } } } } }"
    )

    extensions = await refused(api, query, {"n": None})
    absent = await cost_of(api, query)

    assert extensions == {
        "code": "QUERY_TOO_COSTLY",
        "limit": 2000,
        "actual": FULL_PAGE_COST,
    }
    assert absent == 1 + 20 * 22


async def test_a_page_variable_that_does_not_coerce_is_refused_uncharged(
    make_api, seeded_url
):
    api, clock = await budgeted_api(make_api, seeded_url, capacity=5000)

    api.counter.reset()
    _, body = await post(api, PAGE_BY_VARIABLE, {"n": "100"})

    assert api.counter.statements == []
    assert refusal(body) == {"code": "BAD_USER_INPUT"}
    assert body["errors"][0]["message"] == (
        "Variable '$n' has invalid value: Int cannot represent non-integer value: '100'"
    )
    assert rate_limit(body)["cost"] == 0
    assert rate_limit(body)["remaining"] == 5000


# --- 2a. introspection is bounded by count ------------------------------------------


async def test_aliased_schema_introspections_are_refused(seeded_api):
    query = (
        "query { "
        + " ".join(f"s{i}: __schema {SCHEMA_SELECTION}" for i in range(15))
        + " } "
        + INTROSPECTION_FRAGMENTS
    )

    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 1, "actual": 15}


async def test_schema_selections_are_counted_through_fragments(seeded_api):
    query = """
        query { ...A ...B }
        fragment A on Query { __schema { queryType { name } } }
        fragment B on Query { other: __schema { queryType { name } } }
    """

    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 1, "actual": 2}


async def test_type_selections_are_bounded(seeded_api):
    def types(count: int) -> str:
        selections = (f't{i}: __type(name: "Student") {{ name }}' for i in range(count))
        return "{ " + " ".join(selections) + " }"

    extensions = await refused(seeded_api, types(11))
    status, body = await post(seeded_api, types(10))

    assert extensions == {"code": "QUERY_TOO_COSTLY", "limit": 10, "actual": 11}
    assert body["data"] == {f"t{i}": {"name": "Student"} for i in range(10)}


@pytest.mark.parametrize(
    ("query", "aliases"),
    [
        (
            "query { __schema { types { ...FullType } "
            + " ".join(f"t{i}: types {{ ...FullType }}" for i in range(14))
            + " } } "
            + INTROSPECTION_FRAGMENTS,
            14,
        ),
        ("{ __schema { types { name } again: types { name } } }", 1),
        (
            "{ __schema { types { ...T } } } fragment T on __Type { n: name k: kind }",
            2,
        ),
        ('{ __type(name: "Student") { f: fields { name } } }', 1),
    ],
)
async def test_introspection_takes_no_aliases(seeded_api, query, aliases):
    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 0, "actual": aliases}


@pytest.mark.parametrize(
    "flags", list(itertools.product([False, True], repeat=6)), ids=str
)
def test_every_graphiql_introspection_query_passes_the_default_limits(flags):
    document = parse(get_introspection_query(*flags))

    shape = measure(document)

    assert check_shape(shape, QueryLimits()) is None
    assert (shape.schemas, shape.types, shape.introspection_aliases) == (1, 0, 0)


# --- 2b. repeated fields count as aliases, before validation ------------------------


async def test_repeated_fields_are_refused_before_validation(seeded_api, monkeypatch):
    validated: list[Any] = []
    validate = server_gate.validate_document

    def recording_validate(*args: Any, **kwargs: Any) -> Any:
        validated.append(args[1])
        return validate(*args, **kwargs)

    monkeypatch.setattr(server_gate, "validate_document", recording_validate)
    query = copies(490, "students{totalCount}")  # 1,962 tokens
    started = time.perf_counter()

    extensions = await refused(seeded_api, query)

    elapsed = time.perf_counter() - started
    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 15, "actual": 489}
    assert validated == []
    assert elapsed < 0.5, elapsed  # validation alone took ~0.7 s before
    [error] = (await post(seeded_api, query))[1]["errors"]
    assert error["message"] == (
        "the query uses 489 aliases or repeated fields (a field selected again "
        "under the same name in one selection set, a fragment spread again, a "
        "fragment's count each time it is spread); at most 15 are allowed"
    )


@pytest.mark.parametrize(
    ("query", "repeats"),
    [
        # Inline fragments merge with the selection set they are in.
        (copies(40, "... { students { totalCount } }"), 39),
        (copies(20, "... on Query { ... { students { totalCount } } }"), 19),
        # Different fragments that select the same response name.
        (
            "{ "
            + " ".join(f"...F{i}" for i in range(20))
            + " } "
            + " ".join(
                f"fragment F{i} on Query {{ students {{ totalCount }} }}"
                for i in range(20)
            ),
            19,
        ),
        # One fragment spread again and again.
        (
            copies(20, "...F") + " fragment F on Query { students { totalCount } }",
            19,
        ),
        # Inside a nested selection set.
        (
            "{ students { " + " ".join(["totalCount"] * 17) + " } }",
            16,
        ),
    ],
)
async def test_repeats_are_counted_through_fragments(seeded_api, query, repeats):
    extensions = await refused(seeded_api, query)

    assert extensions == {"code": "TOO_MANY_ALIASES", "limit": 15, "actual": repeats}


async def test_fifteen_repeats_pass(seeded_api):
    status, body = await post(seeded_api, copies(16, "students { totalCount }"))

    assert body["data"] == {"students": {"totalCount": 120}}


def documents_in_use() -> dict[str, str]:
    """The README's documents and the dashboard's, as clients send them."""
    readme = (ROOT / "README.md").read_text()
    documents = {
        f"README block {i}": block
        for i, block in enumerate(re.findall(r"```graphql\n(.*?)```", readme, re.S))
    }
    script = (ROOT / "static/dashboard/dashboard.js").read_text()
    constants = dict(re.findall(r"const (\w+) = `(.*?)`;", script, re.S))
    for name in (
        "METRICS_SUBSCRIPTION",
        "COSTS_SUBSCRIPTION",
        "ALERTS_SUBSCRIPTION",
        "INITIAL_QUERY",
    ):
        documents[name] = re.sub(
            r"\$\{(\w+)\}", lambda m: constants[m.group(1)], constants[name]
        )
    return documents


def test_documents_in_use_pass_the_default_limits():
    documents = documents_in_use()

    refused_ones = {
        name: error.message
        for name, document in documents.items()
        if (error := check_shape(measure(parse(document)), QueryLimits()))
    }

    assert len(documents) >= 11
    assert refused_ones == {}


# --- 3. no suggestions in production, variable coercion included -------------------


BAD_ENUM = (
    "query($o: StudentOrderField!) { students(first: 1, orderBy: $o) { totalCount } }",
    {"o": "NAM"},
    [
        "Variable '$o' has invalid value: Value 'NAM' does not exist in "
        "'StudentOrderField' enum.",
    ],
)
BAD_INPUT = (
    "mutation($input: GradeAddInput!) { gradeAdd(input: $input) { __typename } }",
    {"input": {"studntId": "S00001", "subject": "Math", "score": 90}},
    [
        "Variable '$input' has invalid value: Expected value of type 'GradeAddInput' "
        "to include required field 'studentId', found: {'studntId': 'S00001', "
        "'subject': 'Math', 'score': 90}.",
        "Variable '$input' has invalid value: Expected value of type 'GradeAddInput' "
        "not to include unknown field 'studntId'. Found: {'studntId': 'S00001', "
        "'subject': 'Math', 'score': 90}.",
    ],
)

# Two suggestions: "Did you mean 'score' or 'maxScore'?"
TWO_SUGGESTIONS = (
    BAD_INPUT[0],
    {"input": {"studentId": "S00001", "subject": "Math", "score": 90, "Score": 1}},
    [
        "Variable '$input' has invalid value: Expected value of type 'GradeAddInput' "
        "not to include unknown field 'Score'. Found: {'studentId': 'S00001', "
        "'subject': 'Math', 'score': 90, 'Score': 1}.",
    ],
)


@pytest.mark.parametrize(
    ("query", "variables", "messages"), [BAD_ENUM, BAD_INPUT, TWO_SUGGESTIONS]
)
async def test_production_variable_errors_suggest_nothing(
    make_api, scratch_url, rows_in, query, variables, messages
):
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )

    response = await api.http.post(
        "/graphql",
        json={"query": query, "variables": variables},
        headers=bearer_header(jwt_token()),
    )

    body = response.json()
    assert [error["message"] for error in body["errors"]] == messages
    assert {error["extensions"]["code"] for error in body["errors"]} == {
        "BAD_USER_INPUT"
    }
    assert await rows_in("grades") == 0


@pytest.mark.parametrize(
    ("query", "variables", "suggestion"),
    [
        (*BAD_ENUM[:2], "Did you mean the enum value 'NAME'?"),
        (*BAD_INPUT[:2], "Did you mean 'studentId'?"),
        (*TWO_SUGGESTIONS[:2], "Did you mean 'score' or 'maxScore'?"),
    ],
)
async def test_development_variable_errors_still_suggest(
    seeded_api, query, variables, suggestion
):
    status, body = await post(seeded_api, query, variables)

    assert suggestion in " ".join(error["message"] for error in body["errors"])


# --- 4. the operation that runs -----------------------------------------------------


@pytest.mark.parametrize(
    ("document", "operation_name", "message"),
    [
        (
            TWO_OPERATIONS,
            None,
            "Must provide operation name if query contains multiple operations.",
        ),
        (TWO_OPERATIONS, "Nope", "Unknown operation named 'Nope'."),
        ("{ students { totalCount } }", "Nope", "Unknown operation named 'Nope'."),
        (
            "fragment F on Query { __typename }",
            None,
            "Must provide an operation.",
        ),
    ],
)
@pytest.mark.parametrize(
    ("accept", "status"), [("application/json", 200), (GRAPHQL_RESPONSE, 400)]
)
async def test_an_operation_name_that_selects_nothing_is_refused(
    seeded_api, document, operation_name, message, accept, status
):
    body: dict[str, Any] = {"query": document}
    if operation_name is not None:
        body["operationName"] = operation_name

    seeded_api.counter.reset()
    response = await seeded_api.http.post(
        "/graphql", json=body, headers={"Accept": accept}
    )

    assert seeded_api.counter.statements == []
    assert response.status_code == status
    assert response.headers["content-type"].startswith(accept)
    payload = response.json()
    assert "data" not in payload
    assert [error["message"] for error in payload["errors"]] == [message]
    assert refusal(payload) == {"code": "BAD_USER_INPUT"}
    assert rate_limit(payload)["cost"] == 0


async def test_a_named_operation_of_several_runs(seeded_api):
    status, body = await post(seeded_api, TWO_OPERATIONS, operation_name="Count")

    assert body["data"] == {"students": {"totalCount": 120}}


async def test_an_unknown_operation_name_over_a_websocket(seeded_api):
    async with AsgiWebSocket(seeded_api.app) as ws:
        await ws_init(ws)
        await ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": TWO_OPERATIONS, "operationName": "Nope"},
            }
        )
        error = await ws.receive_json()
        await ws_start(ws, "2", TWO_OPERATIONS)
        unnamed = await ws.receive_json()
        await ws_start(ws, "3", "{ __typename }")
        ok = await ws.receive_json()

    assert error["id"] == "1" and error["type"] == "error"
    assert [e["message"] for e in error["payload"]] == [
        "Unknown operation named 'Nope'."
    ]
    assert refusal({"errors": error["payload"]}) == {"code": "BAD_USER_INPUT"}
    assert unnamed["id"] == "2" and unnamed["type"] == "error"
    assert refusal({"errors": unnamed["payload"]}) == {"code": "BAD_USER_INPUT"}
    assert ok["payload"]["data"] == {"__typename": "Query"}


# --- 5. database errors in the logs -------------------------------------------------


class UniqueViolation(Exception):
    sqlstate = "23505"


LEAKED = "leak.me@example.com"


def integrity_error() -> IntegrityError:
    return IntegrityError(
        "INSERT INTO students (email) VALUES ($1)",
        (LEAKED,),
        UniqueViolation(
            'duplicate key value violates unique constraint "student_email_key"\n'
            f"DETAIL:  Key (email)=({LEAKED}) already exists."
        ),
    )


@pytest.fixture
def error_log(caplog: pytest.LogCaptureFixture) -> Any:
    """Records of gradepulse.errors, which the app's logging setup may keep from
    propagating to the root logger where caplog listens."""
    logger = logging.getLogger("gradepulse.errors")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def logged(caplog: pytest.LogCaptureFixture) -> tuple[list[logging.LogRecord], str]:
    """The error records (each once) and their text as a log handler writes it,
    tracebacks included."""
    records = list(
        {
            id(record): record
            for record in caplog.records
            if record.name == "gradepulse.errors"
        }.values()
    )
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return records, "\n".join(formatter.format(record) for record in records)


async def broken_students(monkeypatch: Any, error: BaseException) -> None:
    async def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(students, "list_students", fail)


async def test_database_errors_are_logged_without_their_message(
    seeded_api, monkeypatch, error_log
):
    await broken_students(monkeypatch, integrity_error())

    status, body = await post(seeded_api, "{ students { totalCount } }")

    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    [record], text = logged(error_log)
    assert record.levelno == logging.ERROR
    assert record.exc_info is None
    assert LEAKED not in text
    assert "DETAIL" not in text
    assert "IntegrityError from UniqueViolation (SQLSTATE 23505)" in text
    assert ", in fail\n" in text  # where it was raised, still


async def test_a_bug_raised_from_a_database_error_hides_the_database_message(
    seeded_api, monkeypatch, error_log
):
    try:
        raise integrity_error()
    except IntegrityError as cause:
        wrapped = RuntimeError("could not create the student")
        wrapped.__cause__ = cause
    await broken_students(monkeypatch, wrapped)

    await post(seeded_api, "{ students { totalCount } }")

    [record], text = logged(error_log)
    assert LEAKED not in text
    assert "RuntimeError from UniqueViolation (SQLSTATE 23505)" in text


async def test_other_bugs_keep_their_traceback(seeded_api, monkeypatch, error_log):
    await broken_students(monkeypatch, KeyError("no such column"))

    status, body = await post(seeded_api, "{ students { totalCount } }")

    assert body["errors"][0]["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    [record], text = logged(error_log)
    assert record.exc_info is not None
    assert "KeyError: 'no such column'" in text
