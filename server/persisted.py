"""Persisted operations: automatic persisted queries (Apollo's protocol) and trusted
documents (a manifest of sha256 -> document, as Relay and GraphQL Codegen write it).

A request names a document by `extensions.persistedQuery { version: 1, sha256Hash }`.
Without `query`, the server runs the manifest's document of that hash, or the one a
client registered before; with neither, it answers PERSISTED_QUERY_NOT_FOUND, and an
Apollo client sends the hash again with the document, which registers it (after
checking that the hash is the document's). The mode (PERSISTED_OPERATIONS):
- off: any document runs; registered documents are kept and served.
- audit: the same, and each document outside the manifest is counted
  (`graphql_persisted_operations_total{outcome="untrusted"}`) and logged with its
  hash, once per hash and worker.
- require: only the manifest's documents run, named by hash or sent whole; anything
  else is PERSISTED_QUERY_REQUIRED, and nothing new is registered. Admins run any
  document when `admin_bypass` is set.

Registered documents live in a DocumentStore: in process (bounded, least recently
used out first), or in Redis for the whole cluster."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from cachetools import LRUCache
from redis.asyncio import Redis
from redis.exceptions import RedisError

from resolvers.errors import ClientError, ErrorCode
from resolvers.viewer import Viewer
from server.envelope import HEX64, Operation, document_hash

log = logging.getLogger("gradepulse.persisted")

MODES = ("off", "audit", "require")
NOT_FOUND_MESSAGE = "PersistedQueryNotFound"  # what Apollo's clients look for
# The outcome of each operation (graphql_persisted_operations_total{outcome}); in
# the off mode only those that name a hash are counted.
TRUSTED = "trusted"  # a manifest document, by hash or sent whole
UNTRUSTED = "untrusted"  # outside the manifest, run (off, audit, an admin's bypass)
NOT_FOUND = "not_found"  # a hash the server does not know
REFUSED = "refused"  # outside the manifest under require
OUTCOMES = (TRUSTED, UNTRUSTED, NOT_FOUND, REFUSED)
# Untrusted hashes logged per worker (each once): a bound on the log and memory.
MAX_LOGGED = 10_000
DEFAULT_MAX_CHARS = 16 * 1_048_576


class PersistedQueryNotFound(ClientError):
    code = ErrorCode.PERSISTED_QUERY_NOT_FOUND


class PersistedQueryRequired(ClientError):
    code = ErrorCode.PERSISTED_QUERY_REQUIRED


class ManifestError(Exception):
    """The manifest cannot be used: the server does not start."""


def check_manifest(data: Any, source: str) -> dict[str, str]:
    """A manifest as JSON gives it: an object of sha256 hex -> document, each hash
    the document's own (a manifest that lies would let a reviewed hash run another
    document). ManifestError names the first problem."""
    if not isinstance(data, dict):
        raise ManifestError(f"{source}: a manifest is a JSON object of hash: document")
    manifest: dict[str, str] = {}
    for key, document in data.items():
        if not isinstance(key, str) or not HEX64.fullmatch(key):
            raise ManifestError(
                f"{source}: {key!r} is not a sha256 hash (64 hex digits)"
            )
        if not isinstance(document, str) or not document.strip():
            raise ManifestError(f"{source}: the document of {key} is not a string")
        if document_hash(document) != key:
            raise ManifestError(f"{source}: {key} is not the sha256 of its document")
        manifest[key] = document
    return manifest


class DocumentStore(Protocol):
    async def get(self, digest: str) -> str | None: ...

    async def put(self, digest: str, document: str) -> None: ...


class MemoryDocuments:
    """Registered documents of this worker, at most `max_chars` of them in all
    (the least recently used go first)."""

    def __init__(self, max_chars: int) -> None:
        self._documents: LRUCache[str, str] = LRUCache(maxsize=max_chars, getsizeof=len)

    async def get(self, digest: str) -> str | None:
        return self._documents.get(digest)

    async def put(self, digest: str, document: str) -> None:
        self._documents[digest] = document


class RedisDocuments:
    """Registered documents shared by the cluster: `<prefix>apq:<sha256>`, kept
    `ttl_s` after the last registration. While Redis cannot be reached the worker's
    own store answers (a miss only makes the client send the document again)."""

    def __init__(
        self, redis: Redis, *, prefix: str, ttl_s: int, max_chars: int
    ) -> None:
        self._redis = redis
        self._prefix = f"{prefix}apq:"
        self._ttl_s = ttl_s
        self._local = MemoryDocuments(max_chars)

    async def get(self, digest: str) -> str | None:
        try:
            value = await self._redis.get(self._prefix + digest)
        except (RedisError, OSError):
            return await self._local.get(digest)
        if value is None:
            return await self._local.get(digest)
        return value.decode("utf-8") if isinstance(value, bytes) else str(value)

    async def put(self, digest: str, document: str) -> None:
        await self._local.put(digest, document)
        try:
            await self._redis.set(self._prefix + digest, document, ex=self._ttl_s)
        except (RedisError, OSError) as error:
            log.warning("a persisted query stayed on this worker: %s", error)


class PersistedOperations:
    """Turns an operation that names a document by hash into one that holds it, and
    applies the mode; `count(outcome)` is told the outcome of each."""

    def __init__(
        self,
        *,
        mode: str = "off",
        manifest: Mapping[str, str] | None = None,
        store: DocumentStore | None = None,
        admin_bypass: bool = False,
        count: Callable[[str], None] | None = None,
        admissible: Callable[[str], bool] = bool,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.manifest = dict(manifest or {})
        # The trusted texts, so that a document sent whole is known without hashing.
        self._trusted = frozenset(self.manifest.values())
        self.store = store or MemoryDocuments(DEFAULT_MAX_CHARS)
        self.admin_bypass = admin_bypass
        self._count = count
        # Whether a document may be kept: one that parses within the limits
        # (server/gate.py's Documents.admissible), so that what is stored is
        # bounded by MAX_DOCUMENT_CHARS and is a document at all.
        self._admissible = admissible
        self._logged: set[str] = set()

    async def resolve(self, operation: Operation, viewer: Viewer) -> Operation:
        """The operation with its document; PersistedQueryNotFound for a hash it
        cannot find, PersistedQueryRequired for a document outside the manifest
        under `require`. Each operation is counted once, by its outcome."""
        digest = operation.persisted_hash
        if digest is None:
            if self.mode == "off":
                return operation  # the common case: nothing to hash
            if operation.query in self._trusted:
                self._tell(TRUSTED)
            else:
                self._judge(document_hash(operation.query), operation, viewer)
            return operation
        if operation.query:
            # Sent with its document (the envelope checked the hash): run it, and
            # keep it for next time unless only the manifest may run.
            if not self._judge(digest, operation, viewer) and self._admissible(
                operation.query
            ):
                await self.store.put(digest, operation.query)
            return operation
        document = self.manifest.get(digest)
        if document is None and (self.mode != "require" or self._bypasses(viewer)):
            document = await self.store.get(digest)
        if document is None:
            self._tell(NOT_FOUND)
            raise PersistedQueryNotFound(NOT_FOUND_MESSAGE)
        operation = replace(operation, query=document)
        self._judge(digest, operation, viewer)
        return operation

    def _bypasses(self, viewer: Viewer) -> bool:
        return self.admin_bypass and viewer.role == "admin" and not viewer.anonymous

    def _judge(self, digest: str, operation: Operation, viewer: Viewer) -> bool:
        """Whether the document is trusted; PersistedQueryRequired when it must be
        and is not. Counts the outcome, and logs an untrusted hash once."""
        if digest in self.manifest:
            self._tell(TRUSTED)
            return True
        if self.mode == "require" and not self._bypasses(viewer):
            self._tell(REFUSED)
            raise PersistedQueryRequired(
                "this server runs only its trusted documents: send the sha256Hash "
                "of a document in its manifest (extensions.persistedQuery)"
            )
        self._tell(UNTRUSTED)
        if (
            self.mode == "audit"
            and digest not in self._logged
            and len(self._logged) < MAX_LOGGED
        ):
            self._logged.add(digest)
            log.warning(
                "an operation outside the trusted documents ran: sha256 %s "
                "(operation %s, %s)",
                digest,
                operation.operation_name or "anonymous",
                viewer.role,
            )
        return False

    def _tell(self, outcome: str) -> None:
        if self._count is not None:
            self._count(outcome)
