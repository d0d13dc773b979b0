"""No suggestions ("Did you mean ...") in production, in variable coercion errors
too; development keeps them."""

from __future__ import annotations

import pytest

from tests.factories import (
    TEST_JWT_SECRET,
    bearer_header,
    jwt_token,
    post,
)

# The HTTP and WebSocket layers: the same on either backend (conftest.py).
pytestmark = pytest.mark.sqlite_only

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
        "not to include unknown field 'studntId', found: {'studntId': 'S00001', "
        "'subject': 'Math', 'score': 90}.",
    ],
)

# Two suggestions: "Did you mean 'score' or 'maxScore'?"
TWO_SUGGESTIONS = (
    BAD_INPUT[0],
    {"input": {"studentId": "S00001", "subject": "Math", "score": 90, "Score": 1}},
    [
        "Variable '$input' has invalid value: Expected value of type 'GradeAddInput' "
        "not to include unknown field 'Score', found: {'studentId': 'S00001', "
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
    body = (await post(seeded_api, query, variables)).json()

    assert suggestion in " ".join(error["message"] for error in body["errors"])


async def test_production_validation_errors_suggest_nothing(make_api, scratch_url):
    """Literals are checked by validation: the same wording as graphql-core's own
    with suggestions hidden."""
    api = await make_api(
        scratch_url, environment="production", jwt_secret=TEST_JWT_SECRET
    )
    query = (
        'mutation { gradeAdd(input: {studntId: "S00001", studentId: "S00001", '
        'subject: "Math", score: 90}) { __typename } }'
    )

    response = await api.http.post(
        "/graphql", json={"query": query}, headers=bearer_header(jwt_token())
    )

    [error] = response.json()["errors"]
    assert error["message"] == (
        "Expected value of type 'GradeAddInput' not to include unknown field "
        '\'studntId\', found: { studntId: "S00001", studentId: "S00001", '
        'subject: "Math", score: 90 }.'
    )
    assert error["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
