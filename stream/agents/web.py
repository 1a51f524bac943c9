"""The worker's pages on Faust's web server (enabled with JOURNEYS_WEB_ENABLED; bound to
JOURNEYS_WEB_BIND:JOURNEYS_WEB_PORT): liveness and readiness for Kubernetes probes and
compose health checks (deploy/k8s, deploy/compose), and Prometheus metrics."""

from __future__ import annotations

from typing import Any

from journeys.metrics import CONTENT_TYPE, exposition


def ready_problems(app: Any) -> list[str]:
    """Why the worker is not ready to process (empty when it is): it has not finished
    starting, is rebalancing, or is recovering its tables from their changelogs."""
    problems = []
    if not getattr(app, "started", False):
        problems.append("starting")
    if getattr(app, "rebalancing", False):
        problems.append("rebalancing")
    if getattr(app, "in_recovery", False):
        problems.append("recovering tables")
    return problems


def install_pages(app: Any) -> None:
    """Register GET /healthz (the event loop answers), GET /readyz (200 when
    ready_problems is empty, else 503 with the reasons) and GET /metrics
    (JourneysApp.metric_sources)."""

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        problems = ready_problems(app)
        if problems:
            return web.json({"status": "not ready", "why": problems}, status=503)
        return web.json({"status": "ready"})

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body = exposition(app.metric_sources())
        # aiohttp takes no charset inside content_type: the whole value as a header
        return web.bytes(body, headers={"Content-Type": CONTENT_TYPE})
