"""The dashboard's Litestar app: the page, its JSON API, events and metrics.

Routes (all JSON unless said; errors are ``{"status_code", "detail"}``):

- ``GET /``: the page; ``/static/...``: its script and style (no CDN).
- ``GET /api/overview``, ``/api/workers``, ``/api/actors``: the views of the
  latest sample.
- ``GET /api/schedules``: the periodic tasks, their next and last runs.
- ``GET /api/tasks?state=&task=&id=&offset=&limit=``: a page of tasks,
  newest first; ``GET /api/tasks/{id}``: one task's page.
- ``GET /api/workflows/{id}``: a workflow and each of its steps.
- ``POST /api/tasks/{id}/cancel``, ``/api/tasks/{id}/retry``,
  ``/api/workflows/{id}/cancel``, ``/api/workflows/{id}/retry``,
  ``/api/workers/{id}/drain``, ``/api/workers/{id}/resume``: the actions.
- ``GET /api/events``: server-sent events, one ``snapshot`` per sample.
- ``GET /metrics``: Prometheus' text format.
- ``GET /api/schema/openapi.json`` (and ``.yaml``): the OpenAPI schema.

Access: with a token configured, actions need it (``Authorization: Bearer
<token>``, or ``?token=`` where a header cannot be set, as for
``EventSource``); off loopback every route but the page's assets needs it.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from litestar import Litestar, MediaType, Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath, QueryParameter
from litestar.response import ServerSentEvent
from litestar.response.sse import ServerSentEventMessage
from litestar.static_files import create_static_files_router

from dashboard import metrics, schema, views
from dashboard.errors import ActionError

if TYPE_CHECKING:
    from dashboard.actor import Dashboard

STATIC = Path(__file__).parent / "static"


def _presented_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return connection.query_params.get("token")


def create_app(dashboard: Dashboard) -> Litestar:
    """The app for ``dashboard`` (its handlers ask the actor for everything)."""

    def authorized(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
        token = dashboard.token
        if token is None:
            return True
        presented = _presented_token(connection)
        return presented is not None and hmac.compare_digest(presented.encode(), token.encode())

    def read_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not dashboard.open_reads and not authorized(connection):
            raise NotAuthorizedException(
                "this dashboard needs its token: Authorization: Bearer <token>, or ?token=")

    def write_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if not authorized(connection):
            raise NotAuthorizedException(
                "actions need the dashboard's token: Authorization: Bearer <token>")

    @get("/", include_in_schema=False, media_type=MediaType.HTML)
    async def index() -> bytes:
        return (STATIC / "index.html").read_bytes()

    @get("/api/overview", guards=[read_guard])
    async def overview() -> schema.Overview:
        """Queue depth, throughput, totals, the store and the fleet, now."""
        return dashboard.overview()

    @get("/api/workers", guards=[read_guard])
    async def workers() -> schema.Workers:
        """The control plane's executor and every subworker, with health and load."""
        return dashboard.workers()

    @get("/api/actors", guards=[read_guard])
    async def actors() -> schema.Actors:
        """Every actor of the node: mailbox, handled messages, restarts."""
        return dashboard.actors()

    @get("/api/schedules", guards=[read_guard])
    async def schedules() -> schema.Schedules:
        """The periodic tasks (cron / every): next run, last run, counts."""
        return views.schedules(dashboard.sample)

    @get("/api/tasks", guards=[read_guard])
    async def tasks(
        state_filter: Annotated[str | None, QueryParameter(name="state")] = None,
        task: Annotated[str | None, QueryParameter()] = None,
        task_id: Annotated[str | None, QueryParameter(name="id")] = None,
        offset: Annotated[int, QueryParameter(ge=0)] = 0,
        limit: Annotated[int, QueryParameter(ge=1)] = 50,
    ) -> schema.TaskList:
        """Tasks held by the store, newest first, filtered by state, task
        name and part of the id."""
        return await dashboard.list_tasks(state=state_filter or None, task=task, id=task_id,
                                          offset=offset, limit=limit)

    @get("/api/tasks/{task_id:str}", guards=[read_guard])
    async def task_page(task_id: FromPath[str]) -> schema.TaskView:
        """One task: arguments, result or error, attempts, timeline, actions."""
        return await dashboard.task(task_id)

    @post("/api/tasks/{task_id:str}/cancel", guards=[write_guard], status_code=200)
    async def cancel(task_id: FromPath[str]) -> schema.CancelResult:
        """Cancel a queued, scheduled or running task (409 if it ended, 404 if unknown)."""
        return await dashboard.cancel(task_id)

    @post("/api/tasks/{task_id:str}/retry", guards=[write_guard], status_code=201)
    async def retry(task_id: FromPath[str]) -> schema.RetryResult:
        """Submit a failed or cancelled task again, as a new task linked to it."""
        return await dashboard.retry(task_id)

    @get("/api/workflows/{workflow_id:str}", guards=[read_guard])
    async def workflow_page(workflow_id: FromPath[str]) -> schema.WorkflowView:
        """One workflow: its state, error, retries, and each step (task,
        the steps it waits for, state, task id, attempt, times, error)."""
        return await dashboard.workflows.workflow(workflow_id)

    @post("/api/workflows/{workflow_id:str}/cancel", guards=[write_guard], status_code=200)
    async def cancel_workflow(workflow_id: FromPath[str]) -> schema.CancelResult:
        """Cancel a running workflow: nothing more starts, its running steps
        are cancelled (409 if it ended, 404 if unknown)."""
        return await dashboard.workflows.cancel(workflow_id)

    @post("/api/workflows/{workflow_id:str}/retry", guards=[write_guard], status_code=200)
    async def retry_workflow(workflow_id: FromPath[str]) -> schema.WorkflowView:
        """Run a failed or cancelled workflow again from where it stopped
        (the steps that succeeded are not run again); answers the workflow
        as it is now (409 if it runs or succeeded, 404 if unknown)."""
        return await dashboard.workflows.retry(workflow_id)

    @post("/api/purge", guards=[write_guard], status_code=200)
    async def purge(
        priority: Annotated[str | None, QueryParameter()] = None,
        task: Annotated[str | None, QueryParameter()] = None,
        scheduled: Annotated[bool, QueryParameter()] = False,
        confirm: Annotated[bool, QueryParameter()] = False,
    ) -> schema.PurgeResult:
        """Cancel every queued task (of a priority, of a task name; with
        scheduled=true those held for later too). Needs confirm=true."""
        return await dashboard.purge(priority=priority or None, task=task or None,
                                     scheduled=scheduled, confirm=confirm)

    @post("/api/retry-failed", guards=[write_guard], status_code=200)
    async def retry_failed(
        task: Annotated[str | None, QueryParameter()] = None,
        confirm: Annotated[bool, QueryParameter()] = False,
    ) -> schema.BulkRetryResult:
        """Retry every failed task not yet retried (of a task name), at most
        10,000 a request. Needs confirm=true."""
        return await dashboard.retry_failed(task=task or None, confirm=confirm)

    @post("/api/workers/{worker:str}/drain", guards=[write_guard], status_code=200)
    async def drain(worker: FromPath[str]) -> schema.DrainResult:
        """Give a worker no new tasks; what it runs finishes."""
        return await dashboard.drain_worker(worker, resume=False)

    @post("/api/workers/{worker:str}/resume", guards=[write_guard], status_code=200)
    async def resume(worker: FromPath[str]) -> schema.DrainResult:
        """Give a drained worker tasks again."""
        return await dashboard.drain_worker(worker, resume=True)

    @get("/api/events", guards=[read_guard])
    async def events() -> ServerSentEvent:
        """Server-sent events: a ``snapshot`` (overview, workers, actors)
        each time the dashboard samples the node."""

        async def stream() -> AsyncIterator[ServerSentEventMessage]:
            async for data in dashboard.events():
                yield ServerSentEventMessage(data=data.decode(), event="snapshot")

        return ServerSentEvent(stream())

    @get("/metrics", guards=[read_guard], media_type=metrics.CONTENT_TYPE)
    async def prometheus() -> bytes:
        """The latest sample in Prometheus' text format."""
        return metrics.render(dashboard.sample, dashboard.node)

    def action_error(_: Request[Any, Any, Any], error: ActionError) -> Response[Any]:
        return Response({"status_code": error.status, "detail": error.detail},
                        status_code=error.status)

    return Litestar(
        route_handlers=[
            index, overview, workers, actors, schedules, tasks, task_page, cancel, retry,
            workflow_page, cancel_workflow, retry_workflow, purge, retry_failed, drain, resume,
            events, prometheus,
            create_static_files_router(path="/static", directories=[STATIC],
                                       include_in_schema=False),
        ],
        exception_handlers={ActionError: action_error},
        openapi_config=OpenAPIConfig(
            title="fastworker dashboard", version=dashboard.node.version,
            path="/api/schema", render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
            use_handler_docstrings=True,
        ),
        debug=False,
        logging_config=None,  # the node's logging stands
    )


__all__ = ["create_app"]
