"""--stats: the loop thread's CPU time per request by stage, printed at shutdown and exposed on the metrics
route. Each stage is charged where it runs (nested stages are exclusive), so the counts follow the
requests exactly: one scope, one Task start, one route-index lookup and two send() calls per app request,
one native handler per native request, one native route lookup per request; the rest of the thread's CPU
time is the loop's."""

from __future__ import annotations

import re

import httpx
import pytest
from conftest import StartServer

APP_REQUESTS = 30
NATIVE_REQUESTS = 20


def stage_metrics(text: str) -> dict[str, float]:
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'fasterapi_stage_seconds_total\{stage="(\w+)"\} (\S+)', text)
    }


def test_stage_counts_follow_the_requests(fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", "routing_app:app", "--stats", "--native", "stats_routes:routes")
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for i in range(APP_REQUESTS):
            assert client.get(f"/items/{i}").status_code == 200
        for _ in range(NATIVE_REQUESTS):
            assert client.get("/native/plain").text == "native"
        metrics = client.get("/native/metrics").text
    stages = stage_metrics(metrics)
    assert set(stages) == {
        "parse",
        "route",
        "native",
        "scope",
        "task_start",
        "app",
        "route_index",
        "send",
        "receive",
        "write",
        "loop",
    }
    for name in ("parse", "route", "native", "scope", "task_start", "app", "route_index", "send", "write"):
        assert stages[name] > 0, name
    cpu = float(re.search(r"^fasterapi_loop_thread_cpu_seconds_total (\S+)$", metrics, re.M).group(1))
    assert (
        cpu > 0 and abs(sum(stages.values()) - cpu) < 1e-6 + cpu * 0.5
    )  # "loop" is the rest of the CPU time

    srv.stop()
    log = srv.log()
    table = log[log.index("Where the CPU time went") :]
    total_requests = APP_REQUESTS + NATIVE_REQUESTS + 1  # and the metrics request
    assert f"({total_requests} requests;" in table

    def calls(label: str) -> float:
        found = re.search(re.escape(label) + r"\s+[\d.]+ us(?:  x ([\d.]+)/request)?", table)
        assert found, (label, table)
        return float(found.group(1) or 0)

    app_share = APP_REQUESTS / total_requests
    assert calls("scope building") == round(app_share, 2)
    assert calls("Task start") == round(app_share, 2)
    assert calls("route index lookup (native)") == round(app_share, 2)
    assert calls("send() serialisation") == round(2 * app_share, 2)
    assert calls("native handler") == round((NATIVE_REQUESTS + 1) / total_requests, 2)
    assert calls("native route lookup") == 1.0


def test_route_plan_stages_under_the_app(fresh_server: StartServer) -> None:
    """With route plans, the report breaks the app's row down into the plans' stages, measured once per
    compiled request (arguments, endpoint and response for every one; dependencies for a route that has
    them), and not for a request FastAPI's own handler answers (a 422)."""
    from fasterapi_asgi import route_plans

    if route_plans.unproven_fastapi():
        pytest.skip("route plans are only used with a proven FastAPI")
    srv = fresh_server("fasterapi", "plans_app:app", "--stats")
    with httpx.Client(base_url=srv.url, timeout=10) as client:
        for i in range(10):
            assert client.get(f"/items/{i}").status_code == 200
        for _ in range(5):
            assert client.get("/items/x").status_code == 422  # handed to FastAPI's handler
        for _ in range(5):  # a route with a dependency tree
            assert client.get("/me/items", headers={"authorization": "Bearer alice"}).status_code == 200
    srv.stop()
    log = srv.log()
    table = log[log.index("Where the CPU time went") :]

    def per_request(label: str) -> float:
        found = re.search(re.escape(label) + r"\s+[\d.]+ us  x ([\d.]+)/request", table)
        assert found, (label, table)
        return float(found.group(1))

    assert "(20 requests;" in table
    for stage in ("arguments (params, body)", "endpoint", "response, sends included"):
        assert per_request(f"plan: {stage}") == round(15 / 20, 2), stage
    assert per_request("plan: dependencies") == round(5 / 20, 2)
    assert table.index("app (Python") < table.index("plan: arguments") < table.index("receive()")
