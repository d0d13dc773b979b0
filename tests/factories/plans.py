"""Compiled plans against graphql-core's general executor: two apps on one database
(QUERY_PLANS on and off), the same requests, and what must be identical."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token
from tests.factories.roles import TEACHER_LEVELS

ROOT = Path(__file__).resolve().parents[2]
# The viewers every document runs as: roles change what a plan may return.
VIEWERS: dict[str, dict[str, str]] = {
    "admin": bearer_header(jwt_token("admin", lifetime_s=3600)),
    "teacher": bearer_header(
        jwt_token("teacher", grade_levels=sorted(TEACHER_LEVELS), lifetime_s=3600)
    ),
    "student": bearer_header(
        jwt_token("student", student_id="S00017", lifetime_s=3600)
    ),
}
APP_SETTINGS: dict[str, Any] = {"jwt_secret": TEST_JWT_SECRET, "auth_required": True}


def _queries_in(text: str) -> bool:
    try:
        document = parse(text)
    except GraphQLError:
        return False
    return any(
        isinstance(d, OperationDefinitionNode) and d.operation is OperationType.QUERY
        for d in document.definitions
    )


def suite_queries() -> list[str]:
    """Every query document written in the test suite (string literals that parse
    as GraphQL and hold a query) and in the README's examples."""
    found: dict[str, None] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if "{" in text and _queries_in(text):
                    found[text] = None
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```graphql\n(.*?)```", readme, re.S):
        # Each example block may hold several operations: one request each.
        for text in re.split(r"\n(?=query|mutation|subscription|\{)", block):
            if _queries_in(text):
                found[text.strip()] = None
    return list(found)


@dataclass
class Pair:
    """The planned app and the general one."""

    planned: Any
    general: Any

    async def both(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
        answers = []
        for api in (self.planned, self.general):
            response = await api.http.post(
                "/graphql",
                json={"query": query, "variables": variables},
                headers=headers or {},
            )
            answers.append((response.status_code, response.json()))
        return answers[0], answers[1]


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """The response without what differs between two servers by design: the rate
    budget's clock, the statement count (a plan may need fewer statements) and the
    request ids."""
    body = dict(body)
    extensions = dict(body.pop("extensions", None) or {})
    rate = extensions.pop("rateLimit", None)
    if rate is not None:
        body["rateLimitCost"] = rate["cost"]
    cost = extensions.pop("cost", None)
    if cost is not None:
        body["apiRequests"] = cost["apiRequests"]
    body["extensionKeys"] = sorted(extensions)
    errors = body.get("errors")
    if errors:
        # Concurrent fields fail in an order of their own (the specification
        # gives none): errors compare as a set.
        errors = sorted(errors, key=lambda e: (str(e.get("path")), e["message"]))
        body["errors"] = [
            {
                **e,
                "extensions": {
                    k: v
                    for k, v in (e.get("extensions") or {}).items()
                    if k != "requestId"
                },
            }
            for e in errors
        ]
    return body


# Fields whose values change between two requests (live figures, the audit log
# that every read appends to, the field usage that every operation adds to): their
# answers are compared by shape.
LIVE_FIELDS = (
    "metrics",
    "costs",
    "alerts",
    "slowestResolvers",
    "auditLog",
    "fieldUsage",
)


def is_live(query: str) -> bool:
    return any(re.search(rf"\b{name}\b", query) for name in LIVE_FIELDS)


def shape(value: Any) -> Any:
    """The value with each leaf replaced by its type (None stays None)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return None if value is None else type(value).__name__


def statements(body: dict[str, Any]) -> int:
    return int(((body.get("extensions") or {}).get("cost") or {}).get("dbQueries", 0))


async def fallbacks(api: Any) -> dict[str, float]:
    """graphql_plan_fallbacks_total by reason."""
    text = (await api.http.get("/metrics")).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "graphql_plan_fallbacks":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    found[sample.labels["reason"]] = sample.value
    return found
