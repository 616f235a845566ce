"""The Grafana dashboard (docs/grafana-dashboard.json) and the compose file (deploy/) against the exchange itself:
every metric and label a PromQL expression names exists in exchange/metrics.py, and every metric there is on the
dashboard, so that neither drifts silently; the compose file starts what the README says, and Prometheus scrapes
the exchange where it serves /metrics, with the credentials it asks for."""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from django.test import Client
from prometheus_client.metrics import MetricWrapperBase

from exchange import metrics
from exchange.metrics_http import PATH

from .processes import ROOT, process_env

DASHBOARD = ROOT / "docs" / "grafana-dashboard.json"
DEPLOY = ROOT / "deploy"

# What a sample name is, per metric type, from the name prometheus_client describes it by.
SAMPLE_SUFFIXES = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
FUNCTIONS = {"rate", "increase", "irate", "sum", "max", "min", "avg", "count", "histogram_quantile", "time",
             "label_values", "clamp_min", "topk", "delta", "deriv", "abs", "absent"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
TARGET_LABELS = {"job", "instance"}  # what Prometheus adds to every scraped series
PROMETHEUS_SERIES = {"up": TARGET_LABELS}  # what Prometheus records of each scrape itself


def registry() -> dict[str, set[str]]:
    """Every sample name exchange/metrics.py defines, with its labels (``le`` on a histogram's buckets)."""
    names = {}
    for metric in vars(metrics).values():
        if isinstance(metric, MetricWrapperBase):
            family = metric.describe()[0]
            for suffix in SAMPLE_SUFFIXES[family.type]:
                names[family.name + suffix] = set(metric._labelnames) | ({"le"} if suffix == "_bucket" else set())
    for name, (_, labels) in metrics.SCRAPED.items():
        names[name] = set(labels)
    return names


def parse(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression uses; a function it does not know fails the test."""
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors: [$__rate_interval], [5m]
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels = set()
    for clause in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {name.strip() for name in clause.split(",") if name.strip()}
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", r"\1", expr)
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    expr = re.sub(r"\{[^}]*\}", "", expr)
    if expr.startswith("label_values("):  # a Grafana variable's query: label_values(metric, label)
        metric, label = (part.strip() for part in expr.removeprefix("label_values(").removesuffix(")").split(","))
        return {metric}, labels | {label}
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(\s*(?:(?:by|without)\s*)?\()?", expr):
        name, call = match.groups()
        if call:
            assert name in FUNCTIONS or name in KEYWORDS, f"unknown PromQL function {name!r} in {expr!r}"
        elif name not in KEYWORDS:
            names.add(name)
    return names, labels


def expressions(dashboard: dict) -> list[str]:
    """Every PromQL expression of the dashboard: its panels' (rows' too) and its variables' queries."""
    exprs = []
    for panel in dashboard["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            exprs += [target["expr"] for target in inner.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"])
    return exprs


def test_every_metric_and_label_on_the_dashboard_is_defined_and_every_metric_is_shown():
    dashboard = json.loads(DASHBOARD.read_text())
    defined = registry()
    shown = check_queries(expressions(dashboard), defined)

    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in shown}
    missing = {name for name in defined if name not in shown and re.sub(r"_(bucket|sum|count)$", "", name)
               not in families}
    assert not missing, f"metrics defined in exchange/metrics.py with no panel: {sorted(missing)}"


def check_queries(exprs: list[str], known: dict[str, set[str]]) -> set[str]:
    """The metrics the expressions use, each defined, with labels it has; else the test fails naming the expression."""
    used = set()
    for expr in exprs:
        names, labels = parse(expr)
        assert names, expr
        unknown = names - known.keys()
        assert not unknown, f"{expr!r} names metrics exchange/metrics.py does not define: {sorted(unknown)}"
        available = set().union(*(known[name] for name in names)) | TARGET_LABELS
        assert labels <= available, f"{expr!r} uses labels its metrics do not have: {sorted(labels - available)}"
        used |= names
    return used


def test_every_alert_queries_defined_metrics_and_prometheus_loads_the_rules():
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]

    check_queries([" ".join(rule["expr"].split()) for rule in alerts], {**registry(), **PROMETHEUS_SERIES})

    assert {"MatcherLagging", "LedgerAuditProblems", "LedgerAuditStale", "LedgerAuditNeverRun", "ExchangeDown"} <= {
        rule["alert"] for rule in alerts}
    job, = prometheus["scrape_configs"]
    assert f'up{{job="{job["job_name"]}"}}' in next(r["expr"] for r in alerts if r["alert"] == "ExchangeDown")
    mounted, = prometheus["rule_files"]
    assert f"./alerts.yml:{mounted}:ro" in compose()["services"]["prometheus"]["volumes"]


def test_the_parser_catches_a_renamed_metric_or_label():
    """The check above would pass on a parser that finds nothing: it finds these."""
    assert parse('sum by (pair, le) (rate(exchange_matcher_lag_seconds_bucket{pair=~"$pair"}[$__rate_interval]))') == (
        {"exchange_matcher_lag_seconds_bucket"}, {"pair", "le"})
    assert parse("time() - max(exchange_ledger_audit_last_run_timestamp_seconds)") == (
        {"exchange_ledger_audit_last_run_timestamp_seconds"}, set())
    assert "exchange_http_request_total" not in registry() and "exchange_http_requests_total" in registry()
    assert registry()["exchange_http_request_duration_seconds_bucket"] == {"endpoint", "method", "le"}


def test_every_panel_queries_the_dashboards_data_source():
    dashboard = json.loads(DASHBOARD.read_text())
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == datasource, panel["title"]
            assert panel["targets"] and all(target["datasource"] == datasource for target in panel["targets"])
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
    provisioned = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert variable["current"]["value"] == provisioned["datasources"][0]["uid"]  # the compose file's Prometheus


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def strings(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from strings(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from strings(value)
    elif isinstance(tree, str):
        yield tree


# What Compose interpolates: ${NAME}, ${NAME:-default}, ${NAME:?error} (and -, ?); $$ is a literal $.
INTERPOLATION = re.compile(r"\$\{[A-Za-z_]\w*(?::?[-?][^${}]*)?\}")


def test_every_dollar_in_the_compose_file_is_an_interpolation_compose_accepts():
    for text in strings(compose()):
        left = INTERPOLATION.sub("", text.replace("$$", ""))
        assert "$" not in left, text


def test_the_compose_file_starts_the_stack_and_prometheus_scrapes_the_exchange_with_its_token():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "setup", "exchange", "prometheus", "grafana"}
    exchange = services["exchange"]
    env = exchange["environment"]
    assert exchange["command"] == ["bin/run-production"]  # gunicorn, Daphne, a matcher per pair, beat: supervised
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    assert env["METRICS_TOKEN"].startswith("${METRICS_TOKEN:?")  # /metrics exists only with a token
    rest_port = env["REST_BIND"].rsplit(":", 1)[1]

    job, = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"exchange:{rest_port}"]}]  # gunicorn, by its service name
    assert job["metrics_path"] == PATH
    assert job["authorization"]["type"] == "Bearer"
    secret = job["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in services["prometheus"]["secrets"]
    assert compose()["secrets"][secret] == {"environment": "METRICS_TOKEN"}  # the exchange's own variable
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]


def test_the_scrape_prometheus_sends_is_answered(settings, markets):
    """What prometheus.yml makes Prometheus send (an Authorization: Bearer header with the token's file) is what
    /metrics takes, and nothing else is."""
    settings.METRICS_TOKEN = "compose-" + "t" * 24
    job, = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    sent = f"{job['authorization']['type']} {settings.METRICS_TOKEN}"

    scraped = Client().get(job["metrics_path"], headers={"Authorization": sent})

    assert scraped.status_code == 200 and b"exchange_http_requests_total" in scraped.content
    assert Client().get(job["metrics_path"], headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard():
    grafana = compose()["services"]["grafana"]
    provider, = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/exchange.yml").read_text())["providers"]
    mounts = {target.split(":")[0]: source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    dashboard_mount = next(target for target, source in mounts.items() if source == "../docs/grafana-dashboard.json")
    assert dashboard_mount.rsplit("/", 1)[0] == provider["options"]["path"]
    datasource, = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())["datasources"]
    assert datasource["url"] == "http://prometheus:9090"
    for service in compose()["services"].values():  # every file the compose file mounts is in the repository
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
    assert (DEPLOY / compose()["services"]["exchange"]["build"]["dockerfile"].removeprefix("deploy/")).exists()


def docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], check=False, capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


@pytest.mark.skipif(docker_compose() is None, reason="docker compose is not installed (the YAML is checked above)")
def test_docker_compose_accepts_the_file():
    env = process_env(METRICS_TOKEN="t" * 32, SECRET_KEY="k" * 50)
    result = subprocess.run([*docker_compose(), "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
                            check=False, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
