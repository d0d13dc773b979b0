"""The operation envelope (query, operationName, variables, extensions), parsed and
checked in one place for HTTP and both WebSocket protocols, and the refusal that
answers a request that cannot run."""

from __future__ import annotations

import hashlib
import re
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
PERSISTED_QUERY_VERSION = 1
HEX64 = re.compile(r"[0-9a-f]{64}")  # a sha256 in lower-case hex


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
    # Empty when the request names its document by hash only (persisted_hash):
    # server/persisted.py puts the document in before anything runs.
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None
    # extensions.persistedQuery.sha256Hash (lower-case hex), when given.
    persisted_hash: str | None = None

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
    extensions = data.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        raise Refusal(400, "`extensions` must be an object or null")
    persisted = _persisted_hash(extensions)
    query = data.get("query")
    if query is None or query == "":
        if persisted is None:
            raise Refusal(400, f"{where} has no `query`")
        query = ""  # named by its hash: the stored document runs
    elif not isinstance(query, str):
        raise Refusal(400, "`query` must be a string")
    elif persisted is not None and document_hash(query) != persisted:
        raise Refusal(
            400,
            "extensions.persistedQuery.sha256Hash is not the sha256 of `query`",
        )
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
    return Operation(query, variables, name or None, extensions, persisted)


def document_hash(document: str) -> str:
    """The sha256 hex of a document, as persisted operations name it."""
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def _persisted_hash(extensions: dict[str, Any] | None) -> str | None:
    """extensions.persistedQuery's hash (Apollo's protocol: version 1, the sha256
    hex of the document), or None when the request names no document."""
    if extensions is None or "persistedQuery" not in extensions:
        return None
    persisted = extensions["persistedQuery"]
    if not isinstance(persisted, dict):
        raise Refusal(400, "extensions.persistedQuery must be an object")
    version = persisted.get("version")
    if type(version) is not int or version != PERSISTED_QUERY_VERSION:
        raise Refusal(
            400,
            f"extensions.persistedQuery.version must be {PERSISTED_QUERY_VERSION}",
        )
    digest = persisted.get("sha256Hash")
    if not isinstance(digest, str) or not HEX64.fullmatch(digest.lower()):
        raise Refusal(
            400,
            "extensions.persistedQuery.sha256Hash must be the sha256 of the "
            "document, 64 hex digits",
        )
    return digest.lower()


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
