"""The operation envelope (query, operationName, variables, extensions), parsed and
checked in one place for HTTP and both WebSocket protocols, and the refusal that
answers a request that cannot run."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    OperationDefinitionNode,
    get_operation_ast,
)

from resolvers.errors import ErrorCode
from server.errors import coded_error

# The longest operationName a request may give (the cost records keep as many).
MAX_OPERATION_NAME_CHARS = 200


class Refusal(Exception):
    """The request (or one operation) is refused before it runs: one coded error,
    and over HTTP the status and headers that go with it."""

    def __init__(
        self,
        status: int,
        message: str,
        code: ErrorCode = ErrorCode.BAD_USER_INPUT,
        *,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.extensions = extensions

    def error(self, request_id: str | None) -> dict[str, Any]:
        """The GraphQL error that answers for it."""
        return coded_error(self.code, self.message, request_id, **self.extensions)


@dataclass(frozen=True, slots=True)
class Operation:
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None

    def payload(self) -> dict[str, Any]:
        """The operation as a WebSocket payload: what Strawberry's handlers run."""
        payload: dict[str, Any] = {
            "query": self.query,
            "variables": self.variables,
            "operationName": self.operation_name,
        }
        if self.extensions is not None:
            payload["extensions"] = self.extensions
        return payload


def parse_operation(data: Any, *, where: str = "the request") -> Operation:
    """The operation of a request body, a GET query string or a WebSocket payload;
    a Refusal (400, BAD_USER_INPUT) when a member has the wrong type."""
    if not isinstance(data, dict):
        raise Refusal(400, f"{where} must be a JSON object")
    query = data.get("query")
    if query is None or query == "":
        raise Refusal(400, f"{where} has no `query`")
    if not isinstance(query, str):
        raise Refusal(400, "`query` must be a string")
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise Refusal(400, "`variables` must be an object or null")
    name = data.get("operationName")
    if name is not None and not isinstance(name, str):
        raise Refusal(400, "`operationName` must be a string or null")
    if name is not None and len(name) > MAX_OPERATION_NAME_CHARS:
        # It would be echoed in the refusal and written to the access log, the
        # metrics' labels and the cost records.
        raise Refusal(
            400,
            f"`operationName` is longer than {MAX_OPERATION_NAME_CHARS} characters",
        )
    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise Refusal(400, "`extensions` must be an object or null")
    return Operation(query, variables, name or None, extensions)


def operation_error(
    document: DocumentNode, operation_name: str | None
) -> GraphQLError | None:
    """Why no operation of the document would run for this operationName (the
    messages graphql-core gives at execution), or None when one would: a document
    with several operations needs a name, and the name must be one of them."""
    if get_operation_ast(document, operation_name) is not None:
        return None
    if operation_name is not None:
        message = f"Unknown operation named '{operation_name}'."
    elif any(isinstance(d, OperationDefinitionNode) for d in document.definitions):
        message = "Must provide operation name if query contains multiple operations."
    else:
        message = "Must provide an operation."
    # The document is valid: the request's operationName is what is wrong.
    return GraphQLError(message, extensions={"code": ErrorCode.BAD_USER_INPUT})
