"""The app answers the README's first query with seeded data."""

from gql import gql

from tests.conftest import SEEDED_STUDENTS

STUDENTS = gql(
    """
    query {
      students(first: 3) {
        totalCount
        edges { node { studentId gradeLevel grades { subject score } } }
      }
    }
    """
)


async def test_students_query_returns_seeded_rows(seeded_api):
    result = await seeded_api.execute(STUDENTS)

    students = result["students"]
    assert students["totalCount"] == SEEDED_STUDENTS
    assert [e["node"]["studentId"] for e in students["edges"]] == [
        "S00001",
        "S00002",
        "S00003",
    ]
    assert all(len(e["node"]["grades"]) == 12 for e in students["edges"])
