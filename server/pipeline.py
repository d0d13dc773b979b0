"""The planned request path: a query whose document has a compiled plan runs here,
with no Strawberry execution context, schema extensions or graphql-core executor.

It does what those extensions do for a query that succeeds, in the same order and
with the same results: the document gate (parsed, limited, validated and costed once
per document, the caller's rate budget charged once), the FERPA audit record before
the response goes out (its data withheld when the record fails), the operation's
timing, statement count and price (`extensions.cost`), per-step resolver timing and
the access log's operation name.

Everything else goes to Strawberry: a document the planner does not cover (counted
in /metrics as `graphql_plan_fallbacks_total{reason}`), a request that fails any
check (the general path words the error), and an operation that meets anything
unusual while running. Such an operation is charged once: the general path is
handed the charge (`Context.precharged`) instead of charging again."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    GraphQLError,
    OperationDefinitionNode,
    get_operation_ast,
    get_variable_values,
    specified_rules,
)
from strawberry.types import ExecutionResult

from monitoring.monitor import Monitor
from monitoring.tally import Tally, current_tally
from resolvers.context import Context, OperationAudit
from resolvers.errors import ClientError
from server.audit import label_of, settle
from server.cost import check_cost
from server.envelope import Operation, operation_error
from server.errors import DB_UNAVAILABLE_ERRORS
from server.execution import Fallback
from server.gate import (
    MAX_COERCION_ERRORS,
    graphql_schema,
    rate_limit_extension,
    settle_cost,
)
from server.plan import NotPlanned, OperationPlan, Planner
from server.steps import STEPS
from server.usage import count_once, operation_cells

log = logging.getLogger("gradepulse.plans")
PLAN_CACHE_SIZE = 1000
# Fallback reasons besides the planner's own (server/plan.py).
INVALID = "invalid"  # refused, not valid, too costly, or its variables are wrong
RATE_LIMITED = "rate_limited"
RUNTIME = "runtime"  # something unusual while running: the general path answers
# Strawberry's validation rules when none are configured (ExecutionContext's default):
# the same tuple, so that a document is validated once for both paths.
VALIDATION_RULES = tuple(specified_rules)


Compiled = tuple[Any, OperationDefinitionNode | None]  # (plan or reason, operation)


class Plans:
    """Plans by document and operation name, compiled once each by `compile`
    (which returns the plan, or the reason there is none, and the operation)."""

    def __init__(self, compile: Callable[[DocumentNode, str | None], Compiled]) -> None:
        self._compile = compile
        self._plans: dict[tuple[int, str | None], tuple[DocumentNode, Compiled]] = {}

    def __call__(self, document: DocumentNode, name: str | None) -> Compiled:
        key = (id(document), name)
        cached = self._plans.get(key)
        if cached is None or cached[0] is not document:
            cached = (document, self._compile(document, name))
            if len(self._plans) >= PLAN_CACHE_SIZE:
                self._plans.clear()
            # The document stays referenced, so that its id stays unique.
            self._plans[key] = cached
        return cached[1]


def selected(
    document: DocumentNode, name: str | None
) -> OperationDefinitionNode | None:
    """The operation a request runs; None when its operationName selects none (the
    general path refuses it)."""
    if operation_error(document, name) is not None:
        return None
    return get_operation_ast(document, name)


def named(definition: OperationDefinitionNode, name: str | None) -> str | None:
    """The request's operationName, else the operation's own name (as Strawberry
    names it to the monitor, the access log and the audit log)."""
    if name is None and definition.name is not None:
        return definition.name.value
    return name


@dataclass(frozen=True, slots=True)
class Ready:
    """A request that passed every check and has a plan: what `run` needs."""

    plan: Any  # OperationPlan; a subscription's shared plan in server/fanout.py
    operation_name: str | None  # named()
    cost: int  # what the rate budget is charged before it runs
    variables: Any  # graphql-core's VariableValues, or None
    # The query's points when a list counted its estimate (settle_cost after).
    estimated_cost: int | None = None
    # The meter's cells of the operation's fields (server/usage.py).
    fields: tuple[Any, ...] = ()


class Pipeline:
    """Planned operations of one schema (build_schema's), and the request path that
    runs them. `audit`: whether the schema records reads in the FERPA audit log;
    `server_errors`: the codes that count as the server's failures."""

    def __init__(
        self,
        schema: Any,
        *,
        monitor: Monitor | None,
        audit: bool,
        server_errors: Collection[str] = (),
    ) -> None:
        self.schema = schema
        self.core = graphql_schema(schema)
        self.documents = schema.documents
        self.planner = Planner(schema, self.core, STEPS)
        self.monitor = monitor
        self.audit = audit
        self.server_errors = server_errors
        self.plans = Plans(self._compile)
        # Counts each operation's fields (monitoring/usage.py), as the gate does.
        self.usage = monitor.usage if monitor is not None else None
        registry = monitor.registry if monitor is not None else None
        self._timings = registry.record_resolver if registry is not None else None
        self._fallback_counter = (
            registry.record_plan_fallback if registry is not None else None
        )

    # --- deciding ---------------------------------------------------------------

    def ready(self, operation: Operation) -> Ready | None:
        """The plan and checked inputs of this request, or None: the general path
        runs it (and the reason is counted)."""
        found = self.check(
            operation.query, operation.operation_name, operation.variables, self.plans
        )
        return self._fallback(found) if isinstance(found, str) else found

    def check(
        self,
        query: Any,
        operation_name: str | None,
        variables: dict[str, Any] | None,
        plans: Plans,
    ) -> Ready | str:
        """What the document gate would check, in its order, for an operation that
        `plans` has a plan for: the plan with the operation's cost and coerced
        variables, or the reason the general path must answer it."""
        if not isinstance(query, str):
            return INVALID
        documents = self.documents
        prepared = documents.prepare(query)
        document = prepared.document
        if prepared.refusal is not None or document is None:
            return INVALID
        if documents.validate(prepared, self.core, VALIDATION_RULES):
            return INVALID
        plan, definition = plans(document, operation_name)
        if isinstance(plan, str):
            return plan
        assert definition is not None
        price = documents.cost(prepared, self.core, operation_name, variables)
        if price.invalid_variables or check_cost(price.cost, documents.limits):
            return INVALID
        coerced: Any = None
        if definition.variable_definitions:
            values = get_variable_values(
                self.core,
                definition.variable_definitions,
                dict(variables or {}),
                max_errors=MAX_COERCION_ERRORS,
            )
            if isinstance(values, list):
                return INVALID
            coerced = values
        usage = self.usage
        return Ready(
            plan,
            named(definition, operation_name),
            price.charge,
            coerced,
            price.cost if price.estimated else None,
            operation_cells(usage, prepared.fields, self.core, document, operation_name)
            if usage is not None
            else (),
        )

    def _compile(
        self, document: DocumentNode, name: str | None
    ) -> tuple[OperationPlan | str, OperationDefinitionNode | None]:
        definition = selected(document, name)
        if definition is None:
            return INVALID, None
        try:
            label = label_of(document, named(definition, name))
            plan = self.planner.compile(document, definition, label)
        except NotPlanned as reason:
            return reason.reason, definition
        return plan, definition

    def _fallback(self, reason: str) -> None:
        if self._fallback_counter is not None:
            self._fallback_counter(reason)
        return None

    # --- running ----------------------------------------------------------------

    async def run(self, ready: Ready, context: Context) -> ExecutionResult | None:
        """The result, or None: the general path answers, with the charge made
        here handed on."""
        services = context.services
        limiter = services.rate_limiter
        rate = None
        if limiter is not None:
            rate = context.rate = await limiter.charge(
                context.viewer, context.client_host, ready.cost
            )
            if not rate.allowed:
                context.precharged = rate
                return self._fallback(RATE_LIMITED)
        if self.usage is not None:
            # Admitted: counted here, and not again by the general path if it
            # takes the operation over.
            count_once(self.usage, ready.fields, context)
        record: OperationAudit | None = None
        if self.audit:
            record = context.operation = OperationAudit(lambda: ready.plan.label)
        tally = Tally()
        token = current_tally.set(tally)
        started = time.perf_counter()
        try:
            data = await ready.plan.execute(context, ready.variables, self._timings)
        except Exception as error:
            self._abandoned(error)
            context.operation = None
            context.precharged = rate
            return self._fallback(RUNTIME)
        finally:
            current_tally.reset(token)
        if rate is not None and ready.estimated_cost is not None:
            rate = context.rate = await settle_cost(
                context, rate, ready.estimated_cost, data
            )
        result = ExecutionResult(data=data, errors=None)
        if record is not None:
            record.running = False
            await settle(context, record, result)
        duration = time.perf_counter() - started
        failed = any(
            (error.extensions or {}).get("code") in self.server_errors
            for error in result.errors or ()
        )
        name = ready.operation_name
        state = context.request_state
        if state is not None:
            state["operation"] = name
        extensions: dict[str, Any] = {}
        monitor = self.monitor
        if monitor is not None:
            monitor.record_operation(
                operation_type="query",
                operation=name,
                duration_s=duration,
                failed=failed,
                over_http=context.over_http,
                db_queries=tally.db_queries,
            )
            extensions["cost"] = monitor.price(
                tally.db_queries, 1 if context.over_http else 0
            )
        if rate is not None:
            extensions["rateLimit"] = rate_limit_extension(rate)
        result.extensions = extensions
        return result

    def _abandoned(self, error: Exception) -> None:
        if isinstance(error, (Fallback, ClientError, GraphQLError)):
            return
        if isinstance(error, DB_UNAVAILABLE_ERRORS):
            return
        # A plan that cannot do what the general path does is a bug worth seeing;
        # the general path still answers.
        log.warning("a planned operation fell back: %s", type(error).__name__)
