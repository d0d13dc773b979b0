"""Alert rules (data) and the engine that turns sampler ticks into alert.log lines."""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from monitoring.costs import RATE_WINDOW_S, RING_S
from monitoring.sinks import FileSink
from monitoring.snapshot import AlertEvent, AlertInputs, AlertState

HIGH_RESPONSE_TIME = "high_response_time"
LOW_CACHE_HIT_RATE = "low_cache_hit_rate"
HIGH_MEMORY = "high_memory"
HIGH_ERROR_RATE = "high_error_rate"
HIGH_COST = "high_cost"
RULE_IDS = (
    HIGH_RESPONSE_TIME,
    LOW_CACHE_HIT_RATE,
    HIGH_MEMORY,
    HIGH_ERROR_RATE,
    HIGH_COST,
)

HISTORY_SIZE = 100
STATE_VERSION = 1
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"

# Which per-rule parameters each rule reads; the others keep their defaults.
_PARAMETERS: dict[str, tuple[str, ...]] = {
    HIGH_RESPONSE_TIME: ("consecutive",),
    LOW_CACHE_HIT_RATE: ("min_lookups",),
    HIGH_MEMORY: (),
    HIGH_ERROR_RATE: ("min_requests", "window_s"),
    HIGH_COST: ("window_s",),
}
_DEFAULT_WINDOW_S = {HIGH_ERROR_RATE: 60.0, HIGH_COST: RATE_WINDOW_S}
# The window of low_cache_hit_rate's lookups (the monitor's cache counters).
CACHE_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One rule. `window_s` is read by whoever builds AlertInputs (the sampler): the
    error window of high_error_rate (60 s) and the spending window of high_cost
    (ALERT_COST_WINDOW_S, 600 s, at most the hour the cost meter keeps); it is None
    for the other rules."""

    id: str
    threshold: float
    enabled: bool = True
    consecutive: int = 3
    min_lookups: int = 20
    min_requests: int = 20
    window_s: float | None = None

    def __post_init__(self) -> None:
        if self.id not in RULE_IDS:
            raise ValueError(
                f"unknown rule id {self.id!r} (known: {', '.join(RULE_IDS)})"
            )
        if not _is_number(self.threshold) or not math.isfinite(self.threshold):
            raise ValueError(f"{self.id}: threshold must be a finite number")
        if self.threshold < 0:
            given = format_threshold(self.threshold)
            raise ValueError(f"{self.id}: threshold must be >= 0, got {given}")
        object.__setattr__(self, "threshold", float(self.threshold))
        if not isinstance(self.enabled, bool):
            raise ValueError(f"{self.id}: enabled must be true or false")
        if not _is_int(self.consecutive) or self.consecutive < 1:
            raise ValueError(f"{self.id}: consecutive must be an integer >= 1")
        for name in ("min_lookups", "min_requests"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{self.id}: {name} must be an integer >= 0")
        if self.window_s is None:
            object.__setattr__(self, "window_s", _DEFAULT_WINDOW_S.get(self.id))
        elif not _is_number(self.window_s) or not (
            math.isfinite(self.window_s) and self.window_s > 0
        ):
            raise ValueError(f"{self.id}: window_s must be a number > 0")
        else:
            object.__setattr__(self, "window_s", float(self.window_s))
        window = self.window_s
        if self.id == HIGH_COST and window is not None and window > RING_S:
            # The cost meter keeps an hour of spending.
            raise ValueError(f"{self.id}: window_s must be at most {RING_S}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def default_rules(
    *,
    response_time_ms: float,
    memory_mb: float,
    cost_per_hour: float,
    cache_hit_rate: float = 70.0,
    error_rate: float = 5.0,
    cost_window_s: float = RATE_WINDOW_S,
) -> list[AlertRule]:
    return [
        AlertRule(HIGH_RESPONSE_TIME, response_time_ms),
        AlertRule(LOW_CACHE_HIT_RATE, cache_hit_rate),
        AlertRule(HIGH_MEMORY, memory_mb),
        AlertRule(HIGH_ERROR_RATE, error_rate),
        AlertRule(HIGH_COST, cost_per_hour, window_s=cost_window_s),
    ]


def parse_rules(text: str | None, defaults: list[AlertRule]) -> list[AlertRule]:
    """Apply ALERT_RULES (a JSON list of objects with an "id") over `defaults`.

    Raises ValueError with a one-line message for anything it cannot use."""
    rules = {rule.id: rule for rule in defaults}
    if text is None or not text.strip():
        return list(rules.values())
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError('expected a JSON list of objects like {"id": ..., ...}')
    seen: set[str] = set()
    for position, entry in enumerate(entries, start=1):
        where = f"entry {position}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {_json_type(entry)}")
        rule_id = entry.get("id")
        if not isinstance(rule_id, str):
            raise ValueError(f'{where}: "id" must be a string')
        if rule_id not in RULE_IDS:
            raise ValueError(
                f"{where}: unknown rule id {rule_id!r} (known: {', '.join(RULE_IDS)})"
            )
        where = f"{where} ({rule_id})"
        if rule_id in seen:
            raise ValueError(f"{where}: rule given more than once")
        seen.add(rule_id)
        allowed = {"id", "threshold", "enabled", *_PARAMETERS[rule_id]}
        unknown = sorted(set(entry) - allowed)
        if unknown:
            names = ", ".join(sorted(allowed))
            raise ValueError(
                f"{where}: unknown field {unknown[0]!r} (allowed: {names})"
            )
        changes = {key: value for key, value in entry.items() if key != "id"}
        _check_types(where, changes)
        base = rules.get(rule_id)
        try:
            if base is None:
                if "threshold" not in changes:
                    raise ValueError("no default for this rule: give a threshold")
                rules[rule_id] = AlertRule(rule_id, **changes)
            else:
                rules[rule_id] = replace(base, **changes)
        except ValueError as exc:
            message = str(exc).removeprefix(f"{rule_id}: ")
            raise ValueError(f"{where}: {message}") from None
    return list(rules.values())


def _check_types(where: str, changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if key == "enabled":
            ok, expected = isinstance(value, bool), "true or false"
        elif key in ("consecutive", "min_lookups", "min_requests"):
            ok, expected = _is_int(value), "an integer"
        else:  # threshold, window_s
            ok, expected = _is_number(value), "a number"
        if not ok:
            raise ValueError(
                f'{where}: "{key}" must be {expected}, got {_json_type(value)}'
            )


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


# Formatting (DESIGN.md, "Contracts that users rely on").


def format_threshold(value: float) -> str:
    """As given: whole numbers without decimals, others with their digits; never in
    scientific notation (300 -> "300", 7.5 -> "7.5", 1e-05 -> "0.00001")."""
    if float(value).is_integer():
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def format_rate(value: float) -> str:
    """A percentage rounded to 1 decimal, without a trailing ".0" (65.0 -> "65")."""
    text = f"{value:.1f}"
    return text.removesuffix(".0")


def _shown(values: Iterable[float], digits: int) -> tuple[float, ...]:
    # The numbers as printed, so that AlertEvent.values matches the message exactly.
    return tuple(float(f"{value:.{digits}f}") for value in values)


def _message(rule: AlertRule, values: tuple[float, ...]) -> str:
    threshold = rule.threshold
    if rule.id == HIGH_RESPONSE_TIME:
        durations = ", ".join(f"{value:.1f}" for value in values)
        return (
            f"High response time: [{durations}] ms "
            f"(threshold: {format_threshold(threshold)}ms)"
        )
    if rule.id == LOW_CACHE_HIT_RATE and not values:
        return (
            f"Low cache hit rate: no cache lookups in the last {CACHE_WINDOW_S}s "
            f"(threshold: {format_threshold(threshold)}%)"
        )
    (value,) = values
    if rule.id == LOW_CACHE_HIT_RATE:
        return (
            f"Low cache hit rate: {format_rate(value)}% "
            f"(threshold: {format_threshold(threshold)}%)"
        )
    if rule.id == HIGH_MEMORY:
        return (
            f"High memory usage: {value:.1f}MB "
            f"(threshold: {format_threshold(threshold)}MB)"
        )
    if rule.id == HIGH_ERROR_RATE:
        return (
            f"High error rate: {format_rate(value)}% "
            f"(threshold: {format_threshold(threshold)}%)"
        )
    return f"High cost: ${value:.6f}/h (threshold: ${threshold:.6f}/h)"


def format_line(event: AlertEvent) -> str:
    """The alert.log line for one event."""
    label = "ALERT" if event.state is AlertState.FIRING else "RESOLVED"
    return (
        f"{event.at.astimezone(UTC).strftime(TIME_FORMAT)} - {label}: {event.message}"
    )


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _RuleState:
    firing: bool = False
    last_fired: datetime | None = None
    # The latest value that the rule could judge (what a RESOLVED line shows).
    last_values: tuple[float, ...] | None = None


class AlertEngine:
    """Evaluates the enabled rules once per sampler tick (the events go on the bus;
    the monitor's AlertHistory keeps the last 100)."""

    def __init__(
        self,
        rules: Iterable[AlertRule],
        *,
        cooldown_seconds: float,
        sink: FileSink | None,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if not (math.isfinite(cooldown_seconds) and cooldown_seconds >= 0):
            raise ValueError("cooldown_seconds must be a finite number >= 0")
        self.rules = tuple(rule for rule in rules if rule.enabled)
        ids = [rule.id for rule in self.rules]
        if len(set(ids)) != len(ids):
            raise ValueError("each rule id may appear once")
        self.cooldown_seconds = float(cooldown_seconds)
        self.sink = sink
        self._clock = clock
        self._states = {rule.id: _RuleState() for rule in self.rules}
        tail = max(
            (rule.consecutive for rule in self.rules if rule.id == HIGH_RESPONSE_TIME),
            default=1,
        )
        self._durations: deque[float] = deque(maxlen=tail)
        self._sequence: tuple[float, ...] = ()
        self._new_from = 0

    def evaluate(self, inputs: AlertInputs, *, write: bool = True) -> list[AlertEvent]:
        """Judge every enabled rule against one tick; return its events.
        `write=False` leaves alert.log alone (a worker judging for itself only)."""
        # The durations seen before this tick and during it, in order: a run of slow
        # requests anywhere in them counts, even if faster ones followed.
        self._sequence = (*self._durations, *inputs.recent_response_ms)
        self._new_from = len(self._durations)
        self._durations.extend(inputs.recent_response_ms)
        now = self._clock()
        now = (now if now.tzinfo else now.replace(tzinfo=UTC)).astimezone(UTC)
        events: list[AlertEvent] = []
        for rule in self.rules:
            if rule.id == HIGH_COST and not inputs.cost_window_full:
                # A young meter's figure covers part of the window: the rule waits
                # (neither fires nor resolves) until it covers all of it.
                continue
            state = self._states[rule.id]
            active, values = self._judge(rule, inputs)
            if values is not None:
                state.last_values = values
            if active:
                assert values is not None
                due = (
                    not state.firing
                    or state.last_fired is None
                    or (now - state.last_fired).total_seconds() >= self.cooldown_seconds
                )
                if due:
                    events.append(self._event(rule, AlertState.FIRING, values, now))
                    state.last_fired = now
                state.firing = True
            elif state.firing:
                shown = state.last_values or ()
                events.append(self._event(rule, AlertState.RESOLVED, shown, now))
                state.firing = False
                state.last_fired = None
        if events and self.sink is not None and write:
            # One write per tick; a failure is the sink's to count and report.
            self.sink.append([format_line(event) for event in events])
        return events

    def _judge(
        self, rule: AlertRule, inputs: AlertInputs
    ) -> tuple[bool, tuple[float, ...] | None]:
        """(condition holds, the values shown) — values None when unknown now."""
        snapshot = inputs.snapshot
        threshold = rule.threshold
        if rule.id == HIGH_RESPONSE_TIME:
            tail = list(self._durations)[-rule.consecutive :]
            if not tail:
                return False, None
            run: list[float] = []
            slow: list[float] | None = None
            # A run counts when it ends on a request of this tick; with no new
            # requests the tail is judged as it stands.
            first_end = self._new_from if len(self._sequence) > self._new_from else 0
            for index, duration in enumerate(self._sequence):
                run = [*run, duration] if duration > threshold else []
                if len(run) >= rule.consecutive and index >= first_end:
                    slow = run[-rule.consecutive :]
            if slow is not None:
                return True, _shown(slow, 1)
            return False, _shown(tail, 1)
        if rule.id == LOW_CACHE_HIT_RATE:
            rate = snapshot.cache_hit_rate
            if inputs.cache_lookups_in_window == 0:
                return False, ()  # known: no lookups at all (its own message)
            if rate is None or inputs.cache_lookups_in_window < rule.min_lookups:
                return False, None
            return rate < threshold, _shown([rate], 1)
        if rule.id == HIGH_MEMORY:
            return snapshot.memory_mb > threshold, _shown([snapshot.memory_mb], 1)
        if rule.id == HIGH_ERROR_RATE:
            rate = snapshot.error_rate
            if rate is None or inputs.requests_in_window < rule.min_requests:
                return False, None
            return rate > threshold, _shown([rate], 1)
        cost = inputs.cost_per_hour
        return cost > threshold, _shown([cost], 6)

    def _event(
        self,
        rule: AlertRule,
        state: AlertState,
        values: tuple[float, ...],
        at: datetime,
    ) -> AlertEvent:
        return AlertEvent(
            rule=rule.id,
            state=state,
            message=_message(rule, values),
            values=values,
            threshold=rule.threshold,
            at=at,
        )

    def firing(self) -> dict[str, bool]:
        return {rule.id: self._states[rule.id].firing for rule in self.rules}

    # The rules' state moves with the leader lock (monitoring/leader.py), so that a
    # new leader neither fires again what is firing nor forgets to resolve it.

    def export_state(self) -> dict[str, Any]:
        """Each rule's firing flag, last firing (cooldown) and last values, as JSON."""
        return {
            "version": STATE_VERSION,
            "rules": {
                rule_id: {
                    "firing": state.firing,
                    "last_fired": state.last_fired.isoformat()
                    if state.last_fired is not None
                    else None,
                    "last_values": list(state.last_values)
                    if state.last_values is not None
                    else None,
                }
                for rule_id, state in self._states.items()
            },
        }

    def import_state(self, data: dict[str, Any]) -> None:
        """Take over `export_state` of another engine: the rules it does not know
        start clear. Raises ValueError (nothing changed) when it is malformed."""
        if data.get("version") != STATE_VERSION or not isinstance(
            data.get("rules"), dict
        ):
            raise ValueError(f"not a version {STATE_VERSION} alert state")
        states: dict[str, _RuleState] = {}
        for rule_id in self._states:
            entry = data["rules"].get(rule_id)
            if entry is None:
                states[rule_id] = _RuleState()
                continue
            fired = entry["last_fired"]
            values = entry["last_values"]
            last_fired = datetime.fromisoformat(fired) if fired is not None else None
            if last_fired is not None and last_fired.tzinfo is None:
                raise ValueError("last_fired has no time zone")
            states[rule_id] = _RuleState(
                firing=bool(entry["firing"]),
                last_fired=last_fired,
                last_values=tuple(float(v) for v in values)
                if values is not None
                else None,
            )
        self._states = states


class AlertHistory:
    """The latest alert events as they reach this worker on the bus topic `alerts`
    (the monitor listens for it): on every worker of a cluster the leader's events,
    so that `alerts(last:)` answers the same everywhere."""

    def __init__(self, *, size: int = HISTORY_SIZE) -> None:
        self._events: deque[AlertEvent] = deque(maxlen=size)

    def add(self, event: AlertEvent) -> None:
        """Keep `event`: the bus hands this worker's own events over as it publishes
        them, the other workers' as they arrive (each once)."""
        self._events.append(event)

    def recent(self, last: int = 20) -> list[AlertEvent]:
        """The newest `last` events (at most 100), oldest first, newest last."""
        if last <= 0:
            return []
        return list(self._events)[-last:]

    def firing(self, rule_ids: Iterable[str]) -> dict[str, bool]:
        """Each rule's state as its latest event here says (not firing without one)."""
        firing = dict.fromkeys(rule_ids, False)
        for event in self._events:
            if event.rule in firing:
                firing[event.rule] = event.state is AlertState.FIRING
        return firing
