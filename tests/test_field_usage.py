"""Field usage (issue 14): which fields a document selects (worked out once per
cached document), the meter's hourly counts, the database's upsert, and the admin
query fieldUsage(since:) over time, restarts and workers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Annotated, Any

import httpx
import pytest
import strawberry
from asgi_lifespan import LifespanManager
from graphql import build_schema, parse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from db.engine import Database, create_database
from db.migrations import create_at_head
from db.usage import UsageLedger, UsageRow, UsageTotal, usage_since
from monitoring.usage import FieldUsageMeter, HourCount, SchemaField, hour_start
from server import usage as server_usage
from server.gate import DocumentGate, Documents, graphql_schema
from server.limits import QueryLimits
from server.usage import schema_fields, selected_fields
from tests.conftest import make_settings
from tests.factories.roles import STUDENT, TEACHER, run

pytestmark = pytest.mark.timeout(60)

# A schema of the test's own, with what the real one may not have (yet): a
# deprecated field and a deprecated argument, an interface, a union, an input.
SDL = """
interface Named { name: String! }
type Person implements Named {
  name: String!
  age: Int
  old: String @deprecated(reason: "Use age.")
  friends: [Person!]!
}
type Robot implements Named { name: String! model: String }
union Thing = Person | Robot
input Filter { name: String }
type Query {
  people(filter: Filter, first: Int, limit: Int @deprecated(reason: "Use first.")): [Person!]!
  named: [Named!]!
  things: [Thing!]!
}
type Mutation { rename(name: String!): Person }
"""
DOCUMENT = """
query A {
  people(limit: 2) { name old ...F }
  named { name ... on Robot { model } __typename }
  things { __typename ... on Person { age } }
}
fragment F on Person { age friends { name } }
query B { named { name } }
"""
FIELD_USAGE = "{ fieldUsage { type field count lastUsedAt deprecated } }"
NAMES = "{ students(first: 20) { edges { node { name } } } }"


# --- which fields a document selects ---------------------------------------------------


def test_an_operation_selects_each_field_once_in_document_order() -> None:
    schema = build_schema(SDL)
    document = parse(DOCUMENT)

    assert selected_fields(schema, document, "A") == (
        ("Query", "people"),
        ("Query", "people(limit:)"),
        ("Person", "name"),
        ("Person", "old"),
        ("Person", "age"),
        ("Person", "friends"),
        ("Query", "named"),
        ("Named", "name"),
        ("Robot", "model"),
        ("Query", "things"),
    )
    assert selected_fields(schema, document, "B") == (
        ("Query", "named"),
        ("Named", "name"),
    )
    assert selected_fields(schema, document, "C") == ()


def test_introspection_is_left_out_and_mutations_count() -> None:
    schema = build_schema(SDL)

    assert selected_fields(schema, parse("{ __schema { types { name } } }"), None) == ()
    assert selected_fields(
        schema, parse('mutation { rename(name: "R") { name __typename } }'), None
    ) == (("Mutation", "rename"), ("Person", "name"))


def test_the_schemas_fields_are_its_object_and_interface_fields() -> None:
    fields = set(schema_fields(build_schema(SDL)))

    assert fields == {
        SchemaField("Named", "name"),
        SchemaField("Person", "name"),
        SchemaField("Person", "age"),
        SchemaField("Person", "old", deprecated=True),
        SchemaField("Person", "friends"),
        SchemaField("Robot", "name"),
        SchemaField("Robot", "model"),
        SchemaField("Query", "people"),
        SchemaField("Query", "people(limit:)", deprecated=True),
        SchemaField("Query", "named"),
        SchemaField("Query", "things"),
        SchemaField("Mutation", "rename"),
    }


# --- the gate: counted per operation, worked out once per document ------------------


@strawberry.type
class LegacyQuery:
    @strawberry.field(description="Old.", deprecation_reason="Use current.")
    def legacy(self) -> int:
        return 1

    @strawberry.field(description="New.")
    def current(
        self,
        id: Annotated[
            int | None, strawberry.argument(deprecation_reason="Use key.")
        ] = None,
        key: str | None = None,
    ) -> int:
        return 2


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    """(type, field) -> value of one series name, as /metrics shows it."""
    text = generate_latest(registry).decode()
    return {
        (sample.labels["type"], sample.labels["field"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_deprecated_usage_is_counted_from_each_cached_document_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meter = FieldUsageMeter()
    schema = strawberry.Schema(
        query=LegacyQuery,
        extensions=[
            partial(DocumentGate, documents=Documents(QueryLimits(), usage=meter))
        ],
    )
    meter.declare(schema_fields(graphql_schema(schema)))
    registry = CollectorRegistry()
    registry.register(meter)
    assert _samples(registry, "graphql_deprecated_field_usage_total") == {
        ("LegacyQuery", "legacy"): 0,
        ("LegacyQuery", "current(id:)"): 0,
    }
    worked_out: list[str | None] = []
    selected = server_usage.selected_fields

    def counting(schema: Any, document: Any, name: str | None) -> Any:
        worked_out.append(name)
        return selected(schema, document, name)

    monkeypatch.setattr(server_usage, "selected_fields", counting)

    for _ in range(3):
        result = await schema.execute("{ legacy current(id: 3) }")
        assert result.errors is None and result.data == {"legacy": 1, "current": 2}
    result = await schema.execute('{ current(key: "k") }')
    assert result.errors is None

    assert worked_out == [None, None]  # two documents, each worked out once
    assert _samples(registry, "graphql_deprecated_field_usage_total") == {
        ("LegacyQuery", "legacy"): 3,
        ("LegacyQuery", "current(id:)"): 3,
    }
    assert _samples(registry, "graphql_field_usage_total") == {
        ("LegacyQuery", "legacy"): 3,
        ("LegacyQuery", "current"): 4,
        ("LegacyQuery", "current(id:)"): 3,
    }


# --- the meter: hours, flushes, failures --------------------------------------------


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, at: datetime) -> None:
        self.now = at.timestamp()


class Ledger:
    """Rows as the database would get them; `fail` makes the next add raise."""

    def __init__(self) -> None:
        self.rows: list[HourCount] = []
        self.fail = False

    async def add(self, rows: Any) -> None:
        if self.fail:
            self.fail = False
            raise ConnectionError("the database is away")
        self.rows.extend(rows)

    async def dispose(self) -> None:
        return None


def _at(hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 12, 6, hour, minute, second, tzinfo=UTC)


async def test_each_count_lands_in_the_hour_it_was_counted_in() -> None:
    clock, ledger = Clock(_at(10, 59, 59)), Ledger()
    meter = FieldUsageMeter(ledger=ledger, clock=clock)
    meter.declare([SchemaField("Query", "a"), SchemaField("Query", "b")])
    a, b = meter.cells([("Query", "a"), ("Query", "b")])
    meter.record((a, b))
    clock.set(_at(11, 0, 1))
    meter.record((a,))
    meter.record((a,))

    assert meter.unflushed(_at(11, 30)) == {("Query", "a"): [2, clock.now]}
    assert meter.unflushed() == {
        ("Query", "a"): [3, clock.now],
        ("Query", "b"): [1, _at(10, 59, 59).timestamp()],
    }
    await meter.flush()

    assert sorted(ledger.rows, key=lambda r: (r.hour, r.field_name)) == [
        HourCount("Query", "a", _at(10), 1, _at(10, 59, 59)),
        HourCount("Query", "b", _at(10), 1, _at(10, 59, 59)),
        HourCount("Query", "a", _at(11), 2, _at(11, 0, 1)),
    ]
    assert meter.unflushed() == {}
    await meter.flush()
    assert len(ledger.rows) == 3  # nothing new: nothing sent


async def test_counts_wait_for_a_database_that_failed() -> None:
    clock, ledger = Clock(_at(9, 15)), Ledger()
    meter = FieldUsageMeter(ledger=ledger, clock=clock)
    (cell,) = meter.cells([("Query", "a")])
    meter.record((cell,))
    ledger.fail = True

    await meter.flush()

    assert ledger.rows == [] and meter.failures == 1
    assert meter.unflushed() == {("Query", "a"): [1, clock.now]}
    clock.set(_at(9, 20))
    meter.record((cell,))
    await meter.flush()
    assert ledger.rows == [HourCount("Query", "a", _at(9), 2, _at(9, 20))]
    assert meter.unflushed() == {}


async def test_usage_adds_the_unflushed_counts_to_the_stored_ones() -> None:
    clock = Clock(_at(12, 5))
    meter = FieldUsageMeter(clock=clock)
    meter.declare(
        [SchemaField("Query", "a"), SchemaField("Query", "old", deprecated=True)]
    )
    meter.record(meter.cells([("Query", "a")]))

    async def stored() -> list[UsageTotal]:
        return [
            UsageTotal("Query", "a", 4, _at(12, 30)),
            UsageTotal("X", "y", 1, _at(1)),
        ]

    rows = await meter.usage(stored, _at(12, 0))

    assert [(r.type_name, r.field_name, r.count, r.deprecated) for r in rows] == [
        ("Query", "a", 5, False),
        ("Query", "old", 0, True),
        ("X", "y", 1, False),
    ]
    assert rows[0].last_used_at == _at(12, 30)  # the later of stored and unflushed
    assert rows[1].last_used_at is None


# --- the database ---------------------------------------------------------------------


@pytest.fixture
async def usage_database(scratch_url: str) -> AsyncIterator[Database]:
    database = create_database(scratch_url)
    await create_at_head(database)
    yield database
    await database.dispose()


async def test_the_ledger_adds_to_each_hour_and_keeps_the_last_use(
    usage_database: Database,
) -> None:
    ledger = UsageLedger(usage_database)
    await ledger.add(
        [
            UsageRow("Student", "name", _at(9), 2, _at(9, 40)),
            UsageRow("Student", "name", _at(11), 3, _at(11, 10)),
            UsageRow("Query", "students", _at(11), 1, _at(11, 5)),
        ]
    )
    # Another worker's counts of the same hour, whose last use came earlier.
    await ledger.add([UsageRow("Student", "name", _at(11), 4, _at(11, 2))])

    async with usage_database.reads() as connection:
        everything = await usage_since(connection, None)
        recent = await usage_since(connection, _at(10))

    assert [
        (r.type_name, r.field_name, r.count, r.last_used_at) for r in everything
    ] == [
        ("Query", "students", 1, _at(11, 5)),
        ("Student", "name", 9, _at(11, 10)),
    ]
    assert [(r.type_name, r.field_name, r.count) for r in recent] == [
        ("Query", "students", 1),
        ("Student", "name", 7),
    ]


# --- fieldUsage -----------------------------------------------------------------------

INTROSPECTION = """
{ __schema { types { name kind
  fields(includeDeprecated: true) { name isDeprecated
    args(includeDeprecated: true) { name isDeprecated } } } } }
"""


async def _schema_fields(api: Any) -> dict[tuple[str, str], bool]:
    """(type, field) -> deprecated, as introspection tells it."""
    body = await api.post(INTROSPECTION)
    found = {}
    for named in body["data"]["__schema"]["types"]:
        if named["kind"] not in ("OBJECT", "INTERFACE") or named["name"][:2] == "__":
            continue
        for field in named["fields"]:
            found[(named["name"], field["name"])] = field["isDeprecated"]
            for argument in field["args"]:
                if argument["isDeprecated"]:
                    key = f"{field['name']}({argument['name']}:)"
                    found[(named["name"], key)] = True
    # The deprecated form of gradeUpdate's and gradeDelete's `id` (the number),
    # which the schema cannot mark: listed too, to retire it with evidence.
    for mutation in ("gradeUpdate", "gradeDelete"):
        found[("Mutation", f"{mutation}(id: gradeId)")] = True
    return found


async def test_field_usage_lists_every_field_with_its_count(api: Any) -> None:
    expected = await _schema_fields(api)
    await api.post(NAMES)
    await api.post(NAMES)
    await api.post("{ students(first: 1) { totalCount } }")

    body = await api.post(FIELD_USAGE)

    assert "errors" not in body, body
    rows = body["data"]["fieldUsage"]
    listed = {(r["type"], r["field"]): r for r in rows}
    assert len(listed) == len(rows)  # each once
    assert [(r["type"], r["field"]) for r in rows] == sorted(listed)
    assert {key: r["deprecated"] for key, r in listed.items()} == expected
    assert {key: r["count"] for key, r in listed.items() if r["count"]} == {
        ("Query", "students"): 3,
        ("StudentConnection", "edges"): 2,
        ("StudentConnection", "totalCount"): 1,
        ("StudentEdge", "node"): 2,
        ("Student", "name"): 2,
        # This operation itself.
        ("Query", "fieldUsage"): 1,
        **{("FieldUsage", f): 1 for f in ("type", "field", "count", "lastUsedAt")},
        ("FieldUsage", "deprecated"): 1,
    }
    for row in rows:
        assert (row["lastUsedAt"] is None) is (row["count"] == 0), row


async def test_since_counts_from_the_start_of_its_hour(api: Any) -> None:
    now = datetime.now(UTC)
    hour = hour_start(now)
    # What other workers (or this one before a restart) stored in earlier hours.
    await UsageLedger(api.services.database).add(
        [
            UsageRow(
                "Student",
                "name",
                hour - timedelta(hours=3),
                5,
                hour - timedelta(hours=3),
            ),
            UsageRow(
                "Student",
                "name",
                hour - timedelta(hours=1),
                7,
                hour - timedelta(minutes=50),
            ),
        ]
    )
    await api.post(NAMES)  # this hour, not flushed yet
    query = "query($since: DateTime) { fieldUsage(since: $since) { type field count lastUsedAt } }"

    async def name_count(since: datetime | None) -> tuple[int, str | None]:
        body = await api.post(
            query, {"since": since.isoformat() if since is not None else None}
        )
        assert "errors" not in body, body
        (row,) = [
            r
            for r in body["data"]["fieldUsage"]
            if (r["type"], r["field"]) == ("Student", "name")
        ]
        return row["count"], row["lastUsedAt"]

    assert (await name_count(None))[0] == 13
    assert (await name_count(hour - timedelta(hours=2)))[0] == 8
    # Within the earlier hour: that whole hour counts.
    assert (await name_count(hour - timedelta(minutes=1)))[0] == 8
    count, last = await name_count(hour + timedelta(hours=1))
    assert (count, last) == (0, None)


@pytest.mark.parametrize("viewer", [TEACHER, STUDENT], ids=["teacher", "student"])
async def test_field_usage_is_forbidden_to_teachers_and_students(
    api: Any, viewer: Any
) -> None:
    data, errors = await run(api, viewer, FIELD_USAGE)

    assert data is None
    assert errors == [(("fieldUsage",), "FORBIDDEN")]


async def test_a_since_that_is_no_date_time_is_bad_user_input(api: Any) -> None:
    body = await api.post(
        "query($since: DateTime) { fieldUsage(since: $since) { count } }",
        {"since": "last tuesday"},
    )

    assert body.get("data") is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def _serve(url: str) -> tuple[Any, LifespanManager, httpx.AsyncClient]:
    app = create_app(make_settings(url))
    manager = LifespanManager(app)
    await manager.__aenter__()
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    )
    return app, manager, http


async def _counts(http: httpx.AsyncClient) -> dict[tuple[str, str], int]:
    """(type, field) -> count of the used fields, as fieldUsage answers."""
    body = (await http.post("/graphql", json={"query": FIELD_USAGE})).json()
    assert "errors" not in body, body
    return {
        (r["type"], r["field"]): r["count"]
        for r in body["data"]["fieldUsage"]
        if r["count"]
    }


async def test_usage_outlives_a_restart(scratch_url: str) -> None:
    _, manager, http = await _serve(scratch_url)
    try:
        for _ in range(2):
            await http.post("/graphql", json={"query": NAMES})
    finally:
        await http.aclose()
        await manager.__aexit__(None, None, None)  # the shutdown flushes

    _, manager, http = await _serve(scratch_url)
    try:
        counts = await _counts(http)
    finally:
        await http.aclose()
        await manager.__aexit__(None, None, None)

    assert counts[("Student", "name")] == 2
    assert counts[("Query", "students")] == 2
    assert counts[("Query", "fieldUsage")] == 1  # this one, not flushed yet


async def test_a_worker_answers_with_what_the_others_flushed(scratch_url: str) -> None:
    first_app, first, first_http = await _serve(scratch_url)
    _, second, second_http = await _serve(scratch_url)
    try:
        await first_http.post("/graphql", json={"query": NAMES})
        await first_http.post("/graphql", json={"query": NAMES})
        await second_http.post("/graphql", json={"query": NAMES})
        # The second worker sees the first's counts once the first has flushed.
        before = await _counts(second_http)
        await first_app.state.monitor.usage.flush()
        after = await _counts(second_http)
    finally:
        for http in (first_http, second_http):
            await http.aclose()
        for manager in (second, first):
            await manager.__aexit__(None, None, None)

    assert before[("Student", "name")] == 1
    assert after[("Student", "name")] == 3
    assert after[("Query", "fieldUsage")] == 2  # the second's own, unflushed
