"""Relay's Global Object Identification and connections: the schema against the
specifications, global ids, node/nodes with the roles and audit of student/grades,
stable ids, gradeUpdate/gradeDelete with either id form, PageInfo both ways."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from graphql import (
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    get_named_type,
)

from tests.factories import grade_input, post
from tests.factories.audit import ANONYMOUS, answer, records
from tests.factories.grades import global_grade_id, grade_number, stored_grade
from tests.factories.roles import ADMIN, STUDENT, TEACHER, VIEWERS, run, schema_of, sql


def gid(type_name: str, key: int) -> str:
    return base64.b64encode(f"{type_name}:{key}".encode()).decode()


# --- the schema against the Relay specifications ------------------------------------


def core(api: Any) -> GraphQLSchema:
    return schema_of(api)._schema


def non_null(type_: Any, of: str) -> bool:
    return isinstance(type_, GraphQLNonNull) and str(type_.of_type) == of


def test_node_interface_and_root_fields_as_the_server_specification_gives(api):
    schema = core(api)
    node = schema.get_type("Node")
    assert isinstance(node, GraphQLInterfaceType)
    assert list(node.fields) == ["id"]
    assert non_null(node.fields["id"].type, "ID")

    query = schema.query_type
    one = query.fields["node"]
    assert str(one.type) == "Node"  # nullable
    assert list(one.args) == ["id"] and str(one.args["id"].type) == "ID!"
    many = query.fields["nodes"]
    assert str(many.type) == "[Node]!"
    assert list(many.args) == ["ids"] and str(many.args["ids"].type) == "[ID!]!"

    implementations = {t.name for t in schema.get_possible_types(node)}
    assert implementations == {"Student", "Grade"}
    for name in implementations:
        assert non_null(schema.get_type(name).fields["id"].type, "ID")
    assert str(schema.get_type("Grade").fields["gradeId"].type) == "Int!"
    assert str(schema.get_type("Student").fields["studentId"].type) == "String!"


def test_every_connection_as_the_connection_specification_gives(api):
    schema = core(api)
    page_info = schema.get_type("PageInfo")
    assert isinstance(page_info, GraphQLObjectType)
    assert {name: str(f.type) for name, f in page_info.fields.items()} == {
        "hasNextPage": "Boolean!",
        "hasPreviousPage": "Boolean!",
        "startCursor": "String",
        "endCursor": "String",
    }
    connections = [
        t
        for name, t in schema.type_map.items()
        if name.endswith("Connection") and isinstance(t, GraphQLObjectType)
    ]
    assert {t.name for t in connections} >= {
        "StudentConnection",
        "GradeConnection",
        "AuditEntryConnection",
    }
    for connection in connections:
        edges = connection.fields["edges"].type
        edges = edges.of_type if isinstance(edges, GraphQLNonNull) else edges
        assert isinstance(edges, GraphQLList), connection.name
        edge = get_named_type(edges)
        assert isinstance(edge, GraphQLObjectType), connection.name
        assert edge.name.endswith("Edge"), connection.name
        assert non_null(edge.fields["cursor"].type, "String"), edge.name
        node_type = edge.fields["node"].type
        node_type = (
            node_type.of_type if isinstance(node_type, GraphQLNonNull) else node_type
        )
        assert not isinstance(node_type, GraphQLList), edge.name
        assert non_null(connection.fields["pageInfo"].type, "PageInfo")
        # Relay's compiler needs `first`/`after` on the field that returns it.
    for field_name in ("students", "grades", "auditLog"):
        arguments = schema.query_type.fields[field_name].args
        assert {"first", "after"} <= set(arguments), field_name


# --- global ids ------------------------------------------------------------------


STUDENT_IDS = (
    'query { student(studentId: "S00007") { id studentId grades { id gradeId } } }'
)


async def test_ids_are_opaque_global_ids_of_primary_keys(seeded_api):
    data, errors = await run(seeded_api, ADMIN, STUDENT_IDS)
    assert errors == []
    [(pk,)] = await sql(
        seeded_api, "SELECT id FROM students WHERE student_id = 'S00007'"
    )
    rows = await sql(
        seeded_api,
        "SELECT id FROM grades WHERE student_id = 'S00007' ORDER BY recorded_at, id",
    )
    student = data["student"]
    assert student["id"] == gid("Student", pk)
    assert student["grades"] == [
        {"id": gid("Grade", number), "gradeId": number} for (number,) in rows
    ]


async def test_the_compiled_plan_and_the_general_executor_give_the_same_ids(
    seeded_api,
):
    document = (
        "query { students(first: 3) { edges { node { id studentId "
        'grades(subject: "Math") { id gradeId __typename } } } } }'
    )
    planned = (await post(seeded_api, document)).json()
    data, errors = await run(seeded_api, ADMIN, document)  # graphql-core's executor
    assert errors == [] and "errors" not in planned
    assert planned["data"] == data
    node = data["students"]["edges"][0]["node"]
    assert node["grades"] and all(
        g["id"] == gid("Grade", g["gradeId"]) for g in node["grades"]
    )


NODE = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Student { studentId gradeLevel }
    ... on Grade { gradeId studentId score }
  }
}
"""
NODES = """
query($ids: [ID!]!) {
  nodes(ids: $ids) { __typename id ... on Student { studentId } ... on Grade { gradeId } }
}
"""


async def keys(api: Any, student_id: str) -> tuple[int, int]:
    """(the student's primary key, the id of their first grade)."""
    [(pk,)] = await sql(
        api, "SELECT id FROM students WHERE student_id = :s", s=student_id
    )
    [(grade,)] = await sql(
        api, "SELECT min(id) FROM grades WHERE student_id = :s", s=student_id
    )
    return pk, grade


async def test_node_reads_a_student_and_a_grade_back(seeded_api, levels):
    pk, grade = await keys(seeded_api, "S00003")

    data, errors = await run(seeded_api, ADMIN, NODE, id=gid("Student", pk))
    assert errors == []
    assert data["node"] == {
        "__typename": "Student",
        "id": gid("Student", pk),
        "studentId": "S00003",
        "gradeLevel": levels["S00003"],
    }
    [(score,)] = await sql(
        seeded_api, "SELECT score FROM grades WHERE id = :g", g=grade
    )
    data, errors = await run(seeded_api, ADMIN, NODE, id=gid("Grade", grade))
    assert errors == []
    assert data["node"] == {
        "__typename": "Grade",
        "id": gid("Grade", grade),
        "gradeId": grade,
        "studentId": "S00003",
        "score": score,
    }


async def test_nodes_in_order_with_null_for_what_is_absent_in_two_statements(
    seeded_api,
):
    first, grade_one = await keys(seeded_api, "S00001")
    second, grade_two = await keys(seeded_api, "S00002")
    ids = [
        gid("Grade", grade_two),
        gid("Student", second),
        gid("Student", 99_999_999),
        gid("Grade", grade_one),
        gid("Student", first),
        gid("Student", first),
    ]
    seeded_api.counter.reset()
    data, errors = await run(seeded_api, ADMIN, NODES, ids=ids)
    statements = list(seeded_api.counter.reads)
    assert errors == []
    assert data["nodes"] == [
        {"__typename": "Grade", "id": ids[0], "gradeId": grade_two},
        {"__typename": "Student", "id": ids[1], "studentId": "S00002"},
        None,
        {"__typename": "Grade", "id": ids[3], "gradeId": grade_one},
        {"__typename": "Student", "id": ids[4], "studentId": "S00001"},
        {"__typename": "Student", "id": ids[4], "studentId": "S00001"},
    ]
    # One statement for the students, one for the grades, and at most one for the
    # grades' owners (whose levels decide who may read them; the shared cache
    # may hold them already), whatever the number of ids.
    assert 2 <= len(statements) <= 3, statements
    assert list(seeded_api.counter.statements) == statements  # reads only


@pytest.mark.parametrize(
    "text",
    [
        "S00001",
        "42",
        gid("Course", 1),
        gid("Student", 0),
        gid("Student", -3),
        base64.b64encode(b"Student:0x10").decode(),
        base64.b64encode(b"Student: 1").decode(),
        gid("Student", 10).rstrip("="),  # not canonical base64
        "!!!",
        "",
    ],
)
async def test_an_id_that_is_not_a_global_id_is_bad_user_input(seeded_api, text):
    data, errors = await run(seeded_api, ADMIN, NODE, id=text)
    assert data == {"node": None}
    assert errors == [(("node",), "BAD_USER_INPUT")]
    data, errors = await run(seeded_api, ADMIN, NODES, ids=[text])
    assert data is None  # nodes is non-null: its error nulls the whole answer
    assert errors == [(("nodes",), "BAD_USER_INPUT")]


async def test_the_error_names_the_argument(seeded_api):
    one = (await post(seeded_api, NODE, {"id": "S00001"})).json()
    many = (await post(seeded_api, NODES, {"ids": ["S00001"]})).json()
    assert one["errors"][0]["extensions"]["argument"] == "id"
    assert many["errors"][0]["extensions"]["argument"] == "ids"
    assert one["errors"][0]["message"] == "'S00001' is not a global id"


@pytest.mark.parametrize("key", [2**31 - 1, 2**31, 2**63 - 1, 2**63, 10**30])
async def test_a_key_no_row_can_hold_names_nothing(seeded_api, key):
    """Well-formed, but beyond the id columns (int4): null, on either backend (the
    driver is never handed a value it would refuse)."""
    pk, _ = await keys(seeded_api, "S00001")
    data, errors = await run(seeded_api, ADMIN, NODE, id=gid("Grade", key))
    assert (data, errors) == ({"node": None}, [])
    ids = [gid("Student", key), gid("Student", pk)]
    data, errors = await run(seeded_api, ADMIN, NODES, ids=ids)
    assert errors == []
    assert data["nodes"] == [
        None,
        {"__typename": "Student", "id": ids[1], "studentId": "S00001"},
    ]


async def test_nodes_takes_at_most_a_hundred_ids(seeded_api):
    pk, _ = await keys(seeded_api, "S00001")
    data, errors = await run(seeded_api, ADMIN, NODES, ids=[gid("Student", pk)] * 100)
    assert errors == [] and len(data["nodes"]) == 100
    data, errors = await run(seeded_api, ADMIN, NODES, ids=[gid("Student", pk)] * 101)
    assert errors == [(("nodes",), "BAD_USER_INPUT")]


# --- the roles of student and grades ---------------------------------------------

# (role, student): readable by that role? S00003 is level 6 (the teacher's), S00001
# level 1, S00017 the student themselves (level 8).
NODE_ROLES = [
    ("admin", "S00001", True),
    ("teacher", "S00003", True),
    ("teacher", "S00001", False),
    ("teacher", "S00017", False),
    ("student", "S00017", True),
    ("student", "S00003", False),
]


@pytest.mark.parametrize(("role", "student_id", "readable"), NODE_ROLES)
async def test_node_checks_the_role_for_students_and_grades(
    seeded_api, role, student_id, readable
):
    pk, grade = await keys(seeded_api, student_id)
    viewer = VIEWERS[role]
    for type_name, key in (("Student", pk), ("Grade", grade)):
        data, errors = await run(seeded_api, viewer, NODE, id=gid(type_name, key))
        if readable:
            assert errors == [] and data["node"]["id"] == gid(type_name, key)
        else:
            assert (data, errors) == ({"node": None}, [(("node",), "FORBIDDEN")])


@pytest.mark.parametrize(
    ("viewer", "refused"), [(ADMIN, False), (TEACHER, False), (STUDENT, True)]
)
async def test_an_absent_object_is_null_but_refused_to_a_student(
    seeded_api, viewer, refused
):
    for type_name in ("Student", "Grade"):
        data, errors = await run(seeded_api, viewer, NODE, id=gid(type_name, 10**9))
        assert data == {"node": None}
        assert errors == ([(("node",), "FORBIDDEN")] if refused else [])


async def test_nodes_refuses_each_unreadable_position_and_answers_the_rest(seeded_api):
    mine, my_grade = await keys(seeded_api, "S00003")  # level 6
    theirs, their_grade = await keys(seeded_api, "S00001")  # level 1
    ids = [
        gid("Student", mine),
        gid("Grade", their_grade),
        gid("Grade", my_grade),
        gid("Student", theirs),
    ]
    data, errors = await run(seeded_api, TEACHER, NODES, ids=ids)
    assert data["nodes"] == [
        {"__typename": "Student", "id": ids[0], "studentId": "S00003"},
        None,
        {"__typename": "Grade", "id": ids[2], "gradeId": my_grade},
        None,
    ]
    assert errors == [(("nodes", 1), "FORBIDDEN"), (("nodes", 3), "FORBIDDEN")]


async def test_a_grade_read_by_node_is_audited_and_a_student_record_is_not(
    seeded_api,
):
    pk, grade = await keys(seeded_api, "S00011")
    document = (
        "query Refetch($a: ID!, $b: ID!) { a: node(id: $a) { id } "
        "b: node(id: $b) { id } }"
    )
    variables = {"a": gid("Student", pk), "b": gid("Grade", grade)}
    request_id, body = answer(await post(seeded_api, document, variables))
    assert "errors" not in body
    assert await records(seeded_api, request_id) == [
        (ANONYMOUS, "admin", "Refetch", "read", ["S00011"])
    ]
    # The student's record alone is not graded data (as with `student`).
    request_id, body = answer(
        await post(seeded_api, "query Only($a: ID!) { node(id: $a) { id } }", variables)
    )
    assert "errors" not in body and await records(seeded_api, request_id) == []


# --- stable ids, and the writes that take them -----------------------------------

STUDENT_CREATE = """
mutation($input: StudentCreateInput!) {
  studentCreate(input: $input) { ... on StudentCreateSuccess { student { id } } }
}
"""
STUDENT_RENAME = """
mutation($old: String!, $new: String!) {
  studentUpdate(studentId: $old, input: { studentId: $new }) {
    ... on StudentUpdateSuccess { student { id studentId } }
  }
}
"""
GRADE_ADD = """
mutation($input: GradeAddInput!) {
  gradeAdd(input: $input) { ... on GradeAddSuccess { grade { id gradeId } } }
}
"""
GRADE_UPDATE = """
mutation($id: ID!, $score: Float!) {
  gradeUpdate(id: $id, input: { score: $score }) {
    __typename
    ... on GradeUpdateSuccess { grade { id gradeId score } }
    ... on NotFoundError { message }
  }
}
"""
GRADE_DELETE = """
mutation($id: ID!) {
  gradeDelete(id: $id) {
    __typename ... on GradeDeleteSuccess { grade { id } } ... on NotFoundError { message }
  }
}
"""


def deprecated_uses(api: Any, mutation: str) -> float | None:
    return api.services.monitor.registry.prometheus.get_sample_value(
        "graphql_deprecated_field_usage_total",
        {"type": "Mutation", "field": f"{mutation}(id: gradeId)"},
    )


async def test_a_students_id_survives_a_new_student_id(api):
    created = await api.execute(
        STUDENT_CREATE,
        input={
            "studentId": "R00001",
            "name": "Ada Relay",
            "email": "ada@relay.test",
            "gradeLevel": 4,
        },
    )
    global_id = created["studentCreate"]["student"]["id"]

    renamed = await api.execute(STUDENT_RENAME, old="R00001", new="R00002")
    assert renamed["studentUpdate"]["student"] == {
        "id": global_id,
        "studentId": "R00002",
    }
    data = await api.execute(NODE, id=global_id)
    assert data["node"]["studentId"] == "R00002"


async def test_grade_writes_take_the_global_id_and_the_deprecated_number(
    api, two_students
):
    student = two_students[0]
    added = await api.execute(GRADE_ADD, input=grade_input(student, score=50))
    grade = added["gradeAdd"]["grade"]
    assert grade["id"] == global_grade_id(grade["gradeId"])
    assert grade_number(grade["id"]) == grade["gradeId"]

    assert deprecated_uses(api, "gradeUpdate") == 0  # its series, from the start
    by_global = await api.execute(GRADE_UPDATE, id=grade["id"], score=61)
    assert deprecated_uses(api, "gradeUpdate") == 0
    by_number = await api.execute(GRADE_UPDATE, id=str(grade["gradeId"]), score=62)
    # The number is the deprecated form: counted, so that it can be retired.
    assert deprecated_uses(api, "gradeUpdate") == 1
    for result, score in ((by_global, 61), (by_number, 62)):
        assert result["gradeUpdate"] == {
            "__typename": "GradeUpdateSuccess",
            "grade": {**grade, "score": score},
        }
    assert (await stored_grade(api, grade["id"]))["score"] == 62

    # Another type's global id names no grade.
    [(pk,)] = await sql(api, "SELECT id FROM students WHERE student_id = :s", s=student)
    for wrong in (
        gid("Student", pk),
        gid("Grade", grade["gradeId"] + 1000),
        gid("Grade", 2**31),  # beyond the column: no such grade, on either backend
        str(2**31),
        "x",
    ):
        result = await api.execute(GRADE_DELETE, id=wrong)
        assert result["gradeDelete"] == {
            "__typename": "NotFoundError",
            "message": f"grade {wrong!r} does not exist",
        }
    assert await stored_grade(api, grade["id"]) is not None

    deleted = await api.execute(GRADE_DELETE, id=str(grade["gradeId"]))
    assert deleted["gradeDelete"]["grade"] == {"id": grade["id"]}
    assert await stored_grade(api, grade["id"]) is None
    assert deprecated_uses(api, "gradeDelete") == 1
    usage = await api.post("{ fieldUsage { type field count deprecated } }")
    assert {
        "type": "Mutation",
        "field": "gradeDelete(id: gradeId)",
        "count": 1,
        "deprecated": True,
    } in usage["data"]["fieldUsage"]


# --- PageInfo: both ends ---------------------------------------------------------

STUDENT_PAGE = """
query($after: String) {
  students(first: 2, after: $after) {
    edges { cursor node { studentId } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}
"""


async def test_page_info_gives_start_cursor_and_has_previous_page(seeded_api):
    first = (await post(seeded_api, STUDENT_PAGE)).json()["data"]["students"]
    edges = first["edges"]
    assert first["pageInfo"] == {
        "hasNextPage": True,
        "hasPreviousPage": False,
        "startCursor": edges[0]["cursor"],
        "endCursor": edges[1]["cursor"],
    }
    after = first["pageInfo"]["endCursor"]
    second = (await post(seeded_api, STUDENT_PAGE, {"after": after})).json()["data"]
    page = second["students"]
    assert [e["node"]["studentId"] for e in page["edges"]] == ["S00003", "S00004"]
    assert page["pageInfo"]["hasPreviousPage"] is True
    assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]

    empty = await post(
        seeded_api,
        'query { grades(studentId: "NOBODY", first: 5) { pageInfo '
        "{ hasNextPage hasPreviousPage startCursor endCursor } } }",
    )
    assert empty.json()["data"]["grades"]["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": False,
        "startCursor": None,
        "endCursor": None,
    }


async def test_nodes_costs_one_point_per_id_and_what_each_selects(seeded_api):
    pk, grade = await keys(seeded_api, "S00001")
    ids = [gid("Student", pk)] * 3 + [gid("Grade", grade)] * 2
    document = "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Student { grades { id } } } }"
    body = (await post(seeded_api, document, {"ids": ids})).json()
    assert "errors" not in body
    # Five objects, each priced with what it may select (a student's grades, at
    # their estimate of 20): 5 * (1 + 20), charged before it runs.
    assert body["extensions"]["rateLimit"]["cost"] == 5 * (1 + 20)
    listed = ", ".join(f'"{i}"' for i in ids[:2])
    literal = f"{{ nodes(ids: [{listed}]) {{ id }} }}"
    body = (await post(seeded_api, literal)).json()
    assert body["extensions"]["rateLimit"]["cost"] == 2
