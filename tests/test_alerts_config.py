"""ALERT_RULES: the default rules, overrides, bad input, AlertRule validation."""

from __future__ import annotations

from dataclasses import replace

import pytest

from monitoring.alerts import (
    AlertRule,
    default_rules,
    parse_rules,
)
from tests.factories.alerts import DEFAULTS


def test_default_rules_and_their_parameters():
    rules = default_rules(response_time_ms=500, memory_mb=300, cost_per_hour=1.0)

    assert rules == [
        AlertRule("high_response_time", 500.0, consecutive=3),
        AlertRule("low_cache_hit_rate", 70.0, min_lookups=20),
        AlertRule("high_memory", 300.0),
        AlertRule("high_error_rate", 5.0, min_requests=20, window_s=60.0),
        AlertRule("high_cost", 1.0, window_s=600.0),
    ]
    assert [rule.window_s for rule in rules] == [None, None, None, 60.0, 600.0]
    assert all(rule.enabled for rule in rules)


def test_parse_rules_applies_overrides_over_the_defaults():
    text = """[
        {"id": "high_memory", "threshold": 400},
        {"id": "high_cost", "enabled": false},
        {"id": "high_response_time", "consecutive": 5, "threshold": 250.5},
        {"id": "high_error_rate", "min_requests": 50, "window_s": 120}
    ]"""

    rules = parse_rules(text, DEFAULTS)

    assert rules == [
        AlertRule("high_response_time", 250.5, consecutive=5),
        AlertRule("low_cache_hit_rate", 70.0),
        AlertRule("high_memory", 400.0),
        AlertRule("high_error_rate", 5.0, min_requests=50, window_s=120.0),
        AlertRule("high_cost", 0.05, enabled=False),
    ]


@pytest.mark.parametrize("text", [None, "", "  ", "[]"])
def test_parse_rules_without_overrides_returns_the_defaults(text):
    assert parse_rules(text, DEFAULTS) == DEFAULTS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[{"id": "slow_disk", "threshold": 1}]',
            "entry 1: unknown rule id 'slow_disk' (known: high_response_time, "
            "low_cache_hit_rate, high_memory, high_error_rate, high_cost)",
        ),
        (
            "[{",
            "invalid JSON: Expecting property name enclosed in double quotes: "
            "line 1 column 3 (char 2)",
        ),
        ("not json", "invalid JSON: Expecting value: line 1 column 1 (char 0)"),
        (
            '{"id": "high_memory"}',
            'expected a JSON list of objects like {"id": ..., ...}',
        ),
        ('["high_memory"]', "entry 1: expected an object, got a string"),
        ('[{"threshold": 1}]', 'entry 1: "id" must be a string'),
        (
            '[{"id": "high_cost"}, {"id": "high_memory", "threshold": -1}]',
            "entry 2 (high_memory): threshold must be >= 0, got -1",
        ),
        (
            '[{"id": "high_memory", "threshold": "400"}]',
            'entry 1 (high_memory): "threshold" must be a number, got a string',
        ),
        (
            '[{"id": "high_memory", "threshold": NaN}]',
            "entry 1 (high_memory): threshold must be a finite number",
        ),
        (
            '[{"id": "high_memory", "enabled": "no"}]',
            'entry 1 (high_memory): "enabled" must be true or false, got a string',
        ),
        (
            '[{"id": "high_response_time", "consecutive": 2.5}]',
            'entry 1 (high_response_time): "consecutive" must be an integer, '
            "got a number",
        ),
        (
            '[{"id": "high_response_time", "consecutive": 0}]',
            "entry 1 (high_response_time): consecutive must be an integer >= 1",
        ),
        (
            '[{"id": "high_error_rate", "window_s": 0}]',
            "entry 1 (high_error_rate): window_s must be a number > 0",
        ),
        (
            '[{"id": "high_memory", "consecutive": 2}]',
            "entry 1 (high_memory): unknown field 'consecutive' "
            "(allowed: enabled, id, threshold)",
        ),
        (
            '[{"id": "high_memory", "treshold": 400}]',
            "entry 1 (high_memory): unknown field 'treshold' "
            "(allowed: enabled, id, threshold)",
        ),
        (
            '[{"id": "high_memory"}, {"id": "high_memory", "threshold": 1}]',
            "entry 2 (high_memory): rule given more than once",
        ),
    ],
)
def test_parse_rules_rejects_bad_input_in_one_line(text, message):
    with pytest.raises(ValueError) as raised:
        parse_rules(text, DEFAULTS)

    assert str(raised.value) == message
    assert "\n" not in message


def test_parse_rules_creates_a_rule_missing_from_the_defaults():
    rules = parse_rules('[{"id": "high_cost", "threshold": 2}]', DEFAULTS[:1])

    assert rules == [DEFAULTS[0], AlertRule("high_cost", 2.0)]
    with pytest.raises(ValueError) as raised:
        parse_rules('[{"id": "high_cost", "enabled": true}]', DEFAULTS[:1])
    assert str(raised.value) == (
        "entry 1 (high_cost): no default for this rule: give a threshold"
    )


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"id": "nope"},
            "unknown rule id 'nope' (known: high_response_time, "
            "low_cache_hit_rate, high_memory, high_error_rate, high_cost)",
        ),
        ({"threshold": -0.5}, "high_memory: threshold must be >= 0, got -0.5"),
        ({"threshold": float("inf")}, "high_memory: threshold must be a finite number"),
    ],
)
def test_alert_rule_validates_itself(changes, message):
    with pytest.raises(ValueError) as raised:
        replace(AlertRule("high_memory", 500), **changes)

    assert str(raised.value) == message
