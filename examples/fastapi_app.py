"""Submitting tasks from FastAPI handlers (asyncio).

With the control plane running (`make run`)::

    pip install fastapi uvicorn
    uvicorn examples.fastapi_app:app --port 8000
    curl -X POST 'localhost:8000/add?x=1&y=2'          # {"task_id": "..."}
    curl 'localhost:8000/result/<task_id>'              # {"state": "succeeded", "value": 3}

One client is opened for the app's lifetime and shared by every request;
concurrent requests' submissions are coalesced into few frames.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException

from examples import tasks
from fastworker import Client, ResultUnknown, TaskError


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with Client() as client:
        app.state.client = client
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/add")
async def add(x: float, y: float) -> dict[str, str]:
    """Queue add(x, y); answer at once with the task id."""
    task_id = await app.state.client.delay(tasks.add, x, y)
    return {"task_id": task_id}


@app.get("/result/{task_id}")
async def result(task_id: str, wait: float = 5.0) -> dict[str, Any]:
    """The task's result, waiting up to `wait` seconds for it."""
    client: Client = app.state.client
    try:
        value = await client.result(task_id, timeout=wait)
    except TimeoutError:
        record = await client.status(task_id)
        return {"state": record.state}
    except ResultUnknown as error:
        raise HTTPException(status_code=404, detail=str(error)) from None
    except TaskError as error:
        return {"state": "failed", "error": f"{error.remote_type}: {error.message}"}
    return {"state": "succeeded", "value": value}


@app.post("/checksum")
async def checksum(data: str) -> dict[str, str]:
    """Run a sync task and wait for it (submit = delay + result)."""
    return {"sha256": await app.state.client.submit(tasks.checksum, data.encode())}
