"""deploy/: the image, compose, systemd, Prometheus and Grafana files refer only to
files that exist, to settings the app reads and to series its /metrics exposes."""

from __future__ import annotations

import configparser
import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from app import DRAIN_MARGIN_S
from monitoring.alerts import (
    CACHE_WINDOW_S,
    HIGH_COST,
    HIGH_ERROR_RATE,
    HIGH_MEMORY,
    HIGH_RESPONSE_TIME,
    LOW_CACHE_HIT_RATE,
    RULE_IDS,
    default_rules,
)
from settings import Settings
from tests.factories import TEST_JWT_SECRET, bearer_header, jwt_token

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
UNIT = DEPLOY / "gradepulse.service"
UNIT_ENV_EXAMPLE = DEPLOY / "gradepulse.env.example"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gradepulse.json"
GRAFANA_DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources"
GRAFANA_DASHBOARDS = DEPLOY / "grafana" / "provisioning" / "dashboards"
NGINX = DEPLOY / "nginx" / "nginx.conf"

WORKERS = ("gradepulse-1", "gradepulse-2")
# What the compose variables stand for in these tests (deploy/.env sets them).
COMPOSE_VARIABLES = {
    "POSTGRES_PASSWORD": "postgres-password-for-tests",
    "JWT_SECRET": TEST_JWT_SECRET,
    "METRICS_TOKEN": "metrics-token-for-tests-" + "m" * 24,
    "GRAFANA_ADMIN_PASSWORD": "grafana-password-for-tests",
    "PUBLIC_HOST": "grades.example.org",
}
# Series that Prometheus makes itself for every scrape: in no /metrics.
PROMETHEUS_SERIES = {"up"}
# Variables of the workers' environment that uvicorn reads, not Settings.
UVICORN_VARIABLES = {"FORWARDED_ALLOW_IPS"}
# Packages at the top of the project that the image leaves out, and why.
NOT_IN_IMAGE = {"tests": "the test suite", "bench": "make bench"}
# The panels: requests, latency, errors, cache hit rate, DB statements,
# memory, cost per hour, subscriptions, field usage.
DASHBOARD_SERIES = {
    "http_requests_total",
    "graphql_operation_duration_seconds_bucket",
    "alerts_firing",
    "cache_hits_total",
    "cache_misses_total",
    "db_queries_total",
    "process_resident_memory_bytes",
    "cost_dollars_total",
    "graphql_subscriptions_active",
    "graphql_subscription_events_total",
    "graphql_subscription_fanout_seconds_bucket",
    "graphql_subscription_dropped_total",
    "graphql_field_usage_total",
    "graphql_deprecated_field_usage_total",
}
QUERY = "query Roster { students(first: 2) { edges { node { studentId name } } } }"


# --- reading the files ---------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    """compose.yaml as written (its `${...}` left as they are)."""
    document: dict[str, Any] = load_yaml(COMPOSE)
    return document


_VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:[-?])([^}]*))?\}")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}`."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if variables.get(name):
            return variables[name]
        if operator == ":?":
            raise KeyError(f"{name}: {argument}")
        return argument or ""

    return _VARIABLE.sub(value, text)


def interpolated(node: Any, variables: dict[str, str]) -> Any:
    """A parsed compose file with its strings interpolated, as Compose does it
    (after parsing: `KEY: ${UNSET:-}` is an empty string, not null)."""
    if isinstance(node, dict):
        return {key: interpolated(value, variables) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolated(value, variables) for value in node]
    if isinstance(node, str):
        return interpolate(node, variables)
    return node


def worker_environment(service: str = WORKERS[0]) -> dict[str, str]:
    document = interpolated(compose(), COMPOSE_VARIABLES)
    environment = document["services"][service]["environment"]
    return {name: str(value) for name, value in environment.items()}


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def read_settings(**values: Any) -> Settings:
    """The settings from the environment (and `values`), without any .env file."""
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]  # pydantic-settings' init-only argument


def setting_names() -> set[str]:
    return {name.upper() for name in Settings.model_fields}


def mounted_from(service: dict[str, Any], container_path: str) -> Path:
    """The file of deploy/ that a service sees at `container_path` (its bind mounts)."""
    wanted = PurePosixPath(container_path)
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith("."):
            continue  # a named volume
        inside = PurePosixPath(target)
        if wanted == inside or inside in wanted.parents:
            return (DEPLOY / source / wanted.relative_to(inside)).resolve()
    raise AssertionError(f"{container_path} comes from no file of deploy/")


def rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(RULES)["groups"] for rule in group["rules"]]


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [panel for panel in panels if panel["type"] != "row"]


def dashboard_expressions() -> list[str]:
    return [
        target["expr"] for panel in dashboard_panels() for target in panel["targets"]
    ]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    found = []
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def copy_sources() -> list[str]:
    sources = []
    for instruction, arguments in dockerfile_instructions():
        if instruction == "COPY" and "--from=" not in arguments:  # not a stage's
            parts = [part for part in arguments.split() if not part.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def dockerignored(path: str) -> bool:
    name = path.rstrip("/")
    for line in DOCKERIGNORE.read_text().splitlines():
        pattern = line.strip().rstrip("/")
        if not pattern or pattern.startswith("#"):
            continue
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatch(name, candidate) for candidate in candidates):
            return True
    return False


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep the case
    parser.read_string(UNIT.read_text())
    return parser


def seconds(value: str) -> float:
    """A duration as compose and systemd write it: 30s, 1m30s, 15min, 45."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, value
    return sum(float(number) * units[unit or "s"] for number, unit in parts)


# --- PromQL --------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
)
_IDENTIFIER = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"} | {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}


def series_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels,
    grouping labels, durations or Grafana's $variables)."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.groups()
        if call is None and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def exposed_names(exposition: str) -> set[str]:
    """Every series name a Prometheus text exposition offers to queries, also of
    families that have no sample yet (labelled metrics not used so far)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{end}" for end in ("_bucket", "_sum", "_count"))
        elif family.type == "summary":
            names.update(f"{family.name}{end}" for end in ("", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def test_series_names_reads_promql() -> None:
    expression = (
        'histogram_quantile(0.95, sum by (le, field) (rate(a_seconds_bucket{x="}"}'
        "[$__rate_interval]))) / on () group_left b_total offset 5m > 1e3 "
        'and max without (instance) (c{rule="d"}) * 3600'
    )

    assert series_names(expression) == {"a_seconds_bucket", "b_total", "c"}


# --- the app's /metrics, as Prometheus reads it ----------------------------------


@pytest.fixture
async def deployed(
    make_api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Any:
    """The app under a worker's compose environment (the database on SQLite and
    without Redis: what /metrics names depends on neither), after one query."""
    for name, value in worker_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("REDIS_URL")
    api = await make_api(
        f"sqlite+aiosqlite:///{tmp_path / 'deploy.db'}", environment="production"
    )
    token = jwt_token("admin", secret=COMPOSE_VARIABLES["JWT_SECRET"])
    answer = await api.http.post(
        "/graphql", json={"query": QUERY}, headers=bearer_header(token)
    )
    assert answer.status_code == 200, answer.text
    assert "errors" not in answer.json(), answer.text
    return api


@pytest.fixture
async def exposed(deployed: Any) -> set[str]:
    """The series names of /metrics, scraped as deploy/prometheus/prometheus.yml
    says: from another container, at a target's host, with METRICS_TOKEN."""
    job = load_yaml(PROMETHEUS)["scrape_configs"][0]
    target = job["static_configs"][0]["targets"][0]
    transport = httpx.ASGITransport(app=deployed.app, client=("172.18.0.9", 41234))
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://{target}"
    ) as prometheus:
        anonymous = await prometheus.get(job["metrics_path"])
        response = await prometheus.get(
            job["metrics_path"],
            headers=bearer_header(COMPOSE_VARIABLES["METRICS_TOKEN"]),
        )

    assert anonymous.status_code == 401  # the token, not the address, lets it in
    assert response.status_code == 200, response.text
    return exposed_names(response.text)


async def test_prometheus_rules_read_only_series_of_metrics(
    exposed: set[str],
) -> None:
    used = set().union(*(series_names(rule["expr"]) for rule in rules()))

    assert used >= {"graphql_operation_duration_seconds_bucket", "cost_dollars_total"}
    assert sorted(used - exposed - PROMETHEUS_SERIES) == []


async def test_dashboard_reads_only_series_of_metrics(exposed: set[str]) -> None:
    used = set().union(*map(series_names, dashboard_expressions()))

    assert used >= DASHBOARD_SERIES
    assert sorted(used - exposed - PROMETHEUS_SERIES) == []


async def test_image_healthcheck_asks_a_route_that_answers(deployed: Any) -> None:
    (healthcheck,) = [a for i, a in dockerfile_instructions() if i == "HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:%s(/[\w/]*)", healthcheck)
    assert url is not None, healthcheck

    response = await deployed.http.get(url.group(1))  # Host 127.0.0.1, as the check

    assert url.group(1).startswith("/health")
    assert response.status_code == 200, response.text


# --- Prometheus ----------------------------------------------------------------------


def test_prometheus_rules_have_their_shape() -> None:
    groups = load_yaml(RULES)["groups"]

    assert groups and all(group["name"] and group["rules"] for group in groups)
    for rule in rules():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"GradePulse[A-Z]\w+", rule["alert"])
        assert isinstance(rule["expr"], str) and rule["expr"].strip()
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["for"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert set(rule["annotations"]) == {"summary", "description"}
    assert len({rule["alert"] for rule in rules()}) == len(rules())


def test_prometheus_rules_mirror_the_built_in_rules_with_production_thresholds() -> (
    None
):
    production = read_settings(environment="production")
    built_in = {
        rule.id: rule
        for rule in default_rules(
            response_time_ms=production.alert_response_time_ms,
            memory_mb=production.alert_memory_mb,
            cost_per_hour=production.alert_cost_per_hour,
            cost_window_s=production.alert_cost_window_s,
        )
    }
    by_rule = {rule["labels"].get("rule"): rule for rule in rules()}

    def number(value: float) -> str:
        return f"{value:g}"

    def minutes(window_s: float | None) -> str:
        assert window_s is not None
        return f"[{window_s / 60:g}m]"

    response_time = built_in[HIGH_RESPONSE_TIME].threshold / 1000  # seconds
    cache = built_in[LOW_CACHE_HIT_RATE]
    cost = built_in[HIGH_COST]
    expected = {
        HIGH_RESPONSE_TIME: [
            "graphql_operation_duration_seconds_bucket",
            f"> {number(response_time)}",
        ],
        LOW_CACHE_HIT_RATE: [
            f"cache_hits_total{minutes(CACHE_WINDOW_S)}",
            f"< {number(cache.threshold)}",
            f">= {cache.min_lookups}",
        ],
        HIGH_MEMORY: [
            "process_resident_memory_bytes",
            f"/ {2**20} > {number(built_in[HIGH_MEMORY].threshold)}",
        ],
        HIGH_ERROR_RATE: [f'alerts_firing{{rule="{HIGH_ERROR_RATE}"}}'],
        HIGH_COST: [
            f'cost_dollars_total{{kind="total"}}{minutes(cost.window_s)}',
            f"* 3600 > {number(cost.threshold)}",
        ],
    }

    assert set(by_rule) - {None} == set(RULE_IDS)
    for rule_id, fragments in expected.items():
        expression = " ".join(by_rule[rule_id]["expr"].split())
        for fragment in fragments:
            assert fragment in expression, (rule_id, fragment, expression)


def test_prometheus_scrapes_each_compose_worker_with_the_token() -> None:
    config = load_yaml(PROMETHEUS)
    (job,) = config["scrape_configs"]
    services = compose()["services"]
    prometheus = services["prometheus"]
    port = worker_environment()["PORT"]
    trusted = worker_environment()["TRUSTED_HOSTS"].split(",")
    (config_file,) = [
        flag.split("=", 1)[1]
        for flag in prometheus["command"]
        if flag.startswith("--config.file=")
    ]
    token_target = job["authorization"]["credentials_file"]
    (token_config,) = [
        entry["source"]
        for entry in prometheus["configs"]
        if entry["target"] == token_target
    ]

    assert job["job_name"] == "gradepulse"  # the rules select job="gradepulse"
    assert job["static_configs"][0]["targets"] == [f"{w}:{port}" for w in WORKERS]
    assert all(worker in trusted for worker in WORKERS)
    assert mounted_from(prometheus, config_file) == PROMETHEUS
    assert [mounted_from(prometheus, path) for path in config["rule_files"]] == [RULES]
    assert job["authorization"]["type"] == "Bearer"
    assert "${METRICS_TOKEN" in compose()["configs"][token_config]["content"]
    assert worker_environment()["METRICS_TOKEN"] == COMPOSE_VARIABLES["METRICS_TOKEN"]


def test_promtool_accepts_the_rules_and_passes_their_tests() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed")

    for command in (["check", "rules", RULES.name], ["test", "rules", RULE_TESTS.name]):
        done = subprocess.run(
            [promtool, *command],
            cwd=RULES.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr


# --- Grafana -------------------------------------------------------------------------


def test_dashboard_has_its_shape() -> None:
    document = json.loads(DASHBOARD.read_text())
    (datasource,) = load_yaml(GRAFANA_DATASOURCES / "prometheus.yml")["datasources"]
    ids = [panel["id"] for panel in document["panels"]]

    assert document["uid"] == "gradepulse" and document["title"] == "GradePulse"
    assert len(ids) == len(set(ids))
    assert len(dashboard_panels()) >= 9
    for panel in dashboard_panels():
        assert panel["title"] and panel["type"] in {
            "timeseries",
            "stat",
            "table",
            "state-timeline",
        }
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert panel["targets"], panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == datasource["uid"]


def test_grafana_provisions_prometheus_and_the_dashboard() -> None:
    grafana = compose()["services"]["grafana"]
    (datasource,) = load_yaml(GRAFANA_DATASOURCES / "prometheus.yml")["datasources"]
    (provider,) = load_yaml(GRAFANA_DASHBOARDS / "gradepulse.yml")["providers"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    prometheus_port = compose()["services"]["prometheus"]["ports"][0].split(":")[-1]

    assert mounted_from(grafana, "/etc/grafana/provisioning") == (
        DEPLOY / "grafana" / "provisioning"
    )
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == f"http://prometheus:{prometheus_port}"
    assert provider["type"] == "file"
    assert DASHBOARD in mounted_from(grafana, provider["options"]["path"]).iterdir()
    assert mounted_from(grafana, home) == DASHBOARD


# --- compose -------------------------------------------------------------------------


def test_compose_refers_only_to_files_that_exist() -> None:
    document = compose()
    referred = []
    for name, service in document["services"].items():
        if build := service.get("build"):
            context = (DEPLOY / build["context"]).resolve()
            referred += [(name, context), (name, context / build["dockerfile"])]
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                referred.append((name, (DEPLOY / source).resolve()))
        for env in service.get("env_file", []):
            path = env if isinstance(env, str) else env["path"]
            referred.append((name, DEPLOY / path))
    for kind in ("configs", "secrets"):
        for name, entry in document.get(kind, {}).items():
            if "file" in entry:
                referred.append((name, DEPLOY / entry["file"]))

    assert [(name, path) for name, path in referred if not path.exists()] == []
    assert {path for _, path in referred} >= {
        ROOT,
        DOCKERFILE,
        PROMETHEUS,
        RULES,
        NGINX,
    }


def test_compose_runs_a_migrated_two_worker_cluster() -> None:
    services = compose()["services"]
    environments = [worker_environment(worker) for worker in WORKERS]
    drain_s = read_settings().operation_timeout_s + DRAIN_MARGIN_S
    image = services["migrate"]["image"]
    serving = [
        name
        for name, service in services.items()
        if service["image"] == image and service.get("command") is None
    ]
    building = [name for name, service in services.items() if "build" in service]

    assert image.startswith("gradepulse:")
    assert sorted(serving) == sorted(WORKERS)
    assert building == ["migrate"]  # one build per tag: two would race
    assert services["migrate"]["command"] == ["gradepulse", "migrate"]
    assert services["migrate"]["restart"] == "no"
    for worker, environment in zip(WORKERS, environments, strict=True):
        service = services[worker]
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert seconds(service["stop_grace_period"]) > drain_s + 10
        assert environment["ENVIRONMENT"] == "production"
        assert environment["WORKERS"] == "1"
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        data = [v for v in service["volumes"] if v.endswith(":/var/lib/gradepulse")]
        assert len(data) == 1 and not data[0].startswith(".")
        assert environment["ALERT_LOG_PATH"].startswith("/var/lib/gradepulse/")
        assert environment["COSTS_CSV_PATH"].startswith("/var/lib/gradepulse/")
    assert environments[0] == environments[1]
    assert services[WORKERS[0]]["volumes"] == services[WORKERS[1]]["volumes"]
    assert "postgres" in services and "redis" in services
    assert {"prometheus", "grafana", "proxy"} <= set(services)


def test_compose_environment_is_valid_production_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = worker_environment()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)

    settings = read_settings()

    assert set(environment) - setting_names() == UVICORN_VARIABLES
    assert settings.environment == "production"
    assert settings.requires_auth and not settings.debug
    assert settings.database_url.startswith("postgresql+asyncpg://gradepulse:")
    assert settings.jwt_secret is not None
    assert settings.metrics_token is not None
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert COMPOSE_VARIABLES["PUBLIC_HOST"] in settings.trusted_host_list
    assert "127.0.0.1" in settings.trusted_host_list  # the image's health check


def test_compose_secrets_are_the_blanks_of_env_example() -> None:
    text = COMPOSE.read_text()
    required = {m[0] for m in _VARIABLE.findall(text) if m[1] == ":?"}
    example = env_file(ENV_EXAMPLE)

    assert required == set(COMPOSE_VARIABLES)
    assert set(example) == required
    assert all(value == "" for value in example.values())  # no secret in git
    for name in required:
        with pytest.raises(KeyError, match=name):
            interpolate(text, {**COMPOSE_VARIABLES, name: ""})
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()
    assert dockerignored(".env")


def test_proxy_sends_clients_to_both_workers() -> None:
    config = NGINX.read_text()
    port = worker_environment()["PORT"]
    (block,) = re.findall(r"upstream gradepulse \{(.*?)\}", config, flags=re.DOTALL)
    upstream = re.findall(r"^\s*server\s+(\S+)", block, flags=re.MULTILINE)

    assert upstream == [f"{worker}:{port}" for worker in WORKERS]
    assert re.search(r"proxy_set_header X-Forwarded-For \$remote_addr;", config)
    assert re.search(r"location = /metrics \{\s*return 404;", config)
    assert mounted_from(compose()["services"]["proxy"], "/etc/nginx/nginx.conf") == (
        NGINX
    )


# --- the image -----------------------------------------------------------------------


def test_dockerfile_copies_existing_files_the_context_keeps() -> None:
    sources = copy_sources()

    assert sources
    assert [s for s in sources if not (ROOT / s).exists()] == []
    assert [s for s in sources if dockerignored(s)] == []


def test_dockerfile_copies_every_package_and_what_the_wheel_holds() -> None:
    copied = {source.rstrip("/") for source in copy_sources()}
    packages = {
        path.parent.name
        for path in ROOT.glob("*/__init__.py")
        if not path.parent.name.startswith(".")
    }
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
        "setuptools"
    ]
    in_wheel = {
        name.split(".")[0] for name in setuptools["packages"]["find"]["include"]
    }
    in_wheel |= {f"{module}.py" for module in setuptools.get("py-modules", [])}

    assert packages - set(NOT_IN_IMAGE) <= copied
    assert in_wheel <= copied
    assert {"app.py", "static", "pyproject.toml", "README.md"} <= copied
    assert not copied & set(NOT_IN_IMAGE)
    assert all(dockerignored(name) for name in (".venv", ".git", "x.db", "alert.log"))
    assert all(dockerignored(name) for name in ("costs.csv", "tests", "bench"))


def test_dockerfile_runs_gradepulse_serve_as_a_user_of_its_own() -> None:
    instructions = dockerfile_instructions()
    (user,) = [a for instruction, a in instructions if instruction == "USER"]
    (command,) = [a for instruction, a in instructions if instruction == "CMD"]
    base = instructions[0]

    assert base[0] == "FROM" and base[1].startswith("python:3.12-slim")
    assert user not in {"root", "0"}
    assert json.loads(command) == ["gradepulse", "serve"]
    runs = [
        arguments for instruction, arguments in instructions if instruction == "RUN"
    ]
    assert any("pip wheel --no-deps --wheel-dir /wheels ." in run for run in runs)
    assert any("pyproject.toml" in run and "pip install -r" in run for run in runs)
    assert any("pip install --no-deps /wheels/*.whl" in run for run in runs)


# --- systemd -------------------------------------------------------------------------


def test_systemd_unit_migrates_then_serves_and_drains() -> None:
    service = unit()["Service"]
    venv = service["ExecStart"].removesuffix("/bin/gradepulse serve")
    drain_s = read_settings().operation_timeout_s + DRAIN_MARGIN_S

    assert service["User"] == "gradepulse" and service["Group"] == "gradepulse"
    assert venv.endswith("/.venv")
    assert service["ExecStartPre"] == f"{venv}/bin/gradepulse migrate"
    assert service["WorkingDirectory"] == f"/var/lib/{service['StateDirectory']}"
    assert service["EnvironmentFile"].startswith("/etc/gradepulse/")
    assert service["Restart"] == "on-failure"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # the parent passes SIGTERM on
    assert seconds(service["TimeoutStopSec"]) > drain_s + 10
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "gradepulse"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_settings_example_is_valid_production_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    example = env_file(UNIT_ENV_EXAMPLE)
    state = "/var/lib/" + unit()["Service"]["StateDirectory"] + "/"
    for name, value in example.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("JWT_SECRET", TEST_JWT_SECRET)  # the blank the operator fills

    settings = read_settings()

    assert set(example) <= setting_names()
    assert example["JWT_SECRET"] == ""
    assert settings.environment == "production"
    assert settings.alert_log_path.startswith(state)
    assert settings.costs_csv_path.startswith(state)
    assert "127.0.0.1" in settings.trusted_host_list
