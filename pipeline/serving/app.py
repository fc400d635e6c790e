"""HTTP routes and auth of the local endpoint server: the Databricks serving-endpoints REST subset.

    GET    /.well-known/databricks-config                 {} (the SDK's discovery probe; no auth)
    GET    /health                                        liveness, pid, endpoint count
    GET    /api/2.0/serving-endpoints                     list
    POST   /api/2.0/serving-endpoints                     create (config loads in the background)
    GET    /api/2.0/serving-endpoints/{name}              state.ready / state.config_update, config, pending_config
    DELETE /api/2.0/serving-endpoints/{name}
    PUT    /api/2.0/serving-endpoints/{name}/config       update: 409 while another update is in progress
    POST   /serving-endpoints/{name}/invocations          routed by traffic_config
    POST   /serving-endpoints/{name}/served-models/{served}/invocations   direct

Errors answer as Databricks does: ``{"error_code", "message"}`` with the HTTP status; no
request can take the server down. With a token, every route but the discovery probe
checks ``Authorization: Bearer <token>`` (FastAPI's ``HTTPBearer``), unknown routes too.
Request/response records of invocations go to ``on_invocation`` when one is given (the
inference log's hook; see ``InvocationRecord``). See docs/serving.md.
"""
from __future__ import annotations

import hmac
import json
import os
import time
import traceback
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from fastapi import Request  # module level: FastAPI resolves the (string) annotations of handlers here
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from pipeline.serving.errors import ApiError, bad_parameter
from pipeline.serving.models import loads, score
from pipeline.serving.scoring import client_request_id
from pipeline.serving.store import EndpointStore, retry_after

__all__ = ["create_app", "InvocationRecord", "DISCOVERY_PATH"]

DISCOVERY_PATH = "/.well-known/databricks-config"
_INLINE_BODY_BYTES = 4 << 20  # larger bodies are parsed off the event loop
_THREAD_LOG_BYTES = 256 << 10  # larger bodies are logged from a worker thread when others are in flight


@dataclass(frozen=True)
class InvocationRecord:
    """One invocation as Databricks' inference tables record it (the columns monitor needs)."""

    databricks_request_id: str
    client_request_id: str | None
    timestamp_ms: int
    execution_time_ms: float
    status_code: int
    endpoint: str
    served_entity: str | None
    model_name: str | None
    model_version: str | None
    request: bytes
    response: bytes


def _error_response(status: int, error_code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps({"error_code": error_code, "message": message}), status_code=status,
                    media_type="application/json", headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past ``limit`` bytes (before reading when the length is declared)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise ApiError(400, "BAD_REQUEST", "invalid Content-Length header") from None
        if size > limit:
            raise ApiError(413, "REQUEST_TOO_LARGE", f"request body of {size} bytes exceeds serving.max_body_mb "
                                                     f"({limit / 2**20:g} MiB); send smaller batches")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "REQUEST_TOO_LARGE", f"request body exceeds serving.max_body_mb "
                                                         f"({limit / 2**20:g} MiB); send smaller batches")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "BAD_REQUEST", "the client disconnected before sending the whole body") from None
    return b"".join(chunks)


def _client_request_id(body: bytes) -> str | None:
    """Databricks' ``client_request_id`` of a request the scorer did not parse (top level, or
    in ``params``)."""
    if b"client_request_id" not in body:  # a scan, not a second parse of every body
        return None

    try:
        return client_request_id(loads(body, "invocation"))
    except ApiError:
        return None


def create_app(store: EndpointStore, token: str | None = None, max_body_mb: float = 64.0,
               on_invocation: Callable[[InvocationRecord], None] | None = None) -> Any:
    """The ASGI app (FastAPI). ``on_invocation`` receives a record of every invocation (any
    status) after the response is built and before it is sent: on the event loop, or from a
    worker thread for a body over ``_THREAD_LOG_BYTES`` while other invocations are in flight
    (the inference log's copy releases the GIL, so it overlaps them; docs/performance.md)."""
    from fastapi import APIRouter, Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.security import HTTPBearer
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.responses import JSONResponse

    limit = int(max_body_mb * 2**20)
    app = FastAPI(title="p300 local serving endpoint", docs_url=None, redoc_url=None, openapi_url=None)
    bearer = HTTPBearer(auto_error=False)
    expected = token.encode() if token else None

    async def authenticate(request: Request) -> None:
        if expected is None:
            return
        credentials = await bearer(request)
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), expected):
            raise ApiError(401, "UNAUTHENTICATED", "missing or wrong bearer token "
                                                   "(Authorization: Bearer <serving.token>)",
                           headers={"WWW-Authenticate": "Bearer"})

    api = APIRouter(dependencies=[Depends(authenticate)] if expected else [])

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc.status, exc.error_code, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        try:  # no route matched, so no dependency ran: an unknown route reveals nothing without the token
            await authenticate(request)
        except ApiError as denied:
            return _error_response(denied.status, denied.error_code, denied.message, denied.headers)
        code = {404: "ENDPOINT_NOT_FOUND", 405: "BAD_REQUEST"}.get(exc.status_code, "BAD_REQUEST")
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return _error_response(exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
        return _error_response(400, "BAD_REQUEST", str(exc)[:500])

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        store.log(f"internal error on {request.method} {request.url.path}: "
                  f"{''.join(traceback.format_exception(exc))[-2000:]}")
        return _error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {str(exc)[:300]}")

    @app.get(DISCOVERY_PATH)
    async def discovery() -> Response:
        return JSONResponse({})  # nothing to discover: the SDK keeps its explicit configuration

    @api.get("/health")
    async def health() -> Response:
        return JSONResponse({"status": "ok", "pid": os.getpid(), "endpoints": len(store.endpoints)})

    @api.get("/api/2.0/serving-endpoints")
    async def list_endpoints() -> Response:
        return JSONResponse({"endpoints": [ep.describe() for ep in list(store.endpoints.values())]})

    @api.post("/api/2.0/serving-endpoints")
    async def create(request: Request) -> Response:
        body = loads(await _read_body(request, limit), "create")
        if not isinstance(body, dict):
            raise bad_parameter("create: the body must be a JSON object")
        return JSONResponse(await run_in_threadpool(store.create, body.get("name"), body.get("config")))

    @api.get("/api/2.0/serving-endpoints/{name}")
    async def get(name: str) -> Response:
        return JSONResponse(store.get(name).describe())

    @api.delete("/api/2.0/serving-endpoints/{name}")
    async def delete(name: str) -> Response:
        store.delete(name)
        return JSONResponse({})

    @api.put("/api/2.0/serving-endpoints/{name}/config")
    async def update(name: str, request: Request) -> Response:
        body = loads(await _read_body(request, limit), "update config")
        store.get(name)
        return JSONResponse(await run_in_threadpool(store.update, name, body))

    async def _answer(request: Request, name: str, served: str | None) -> tuple[Response, dict[str, Any]]:
        """The invocation's response, and what the record needs to know of it."""
        seen: dict[str, Any] = {"body": b"", "served": served}
        try:
            body = seen["body"] = await _read_body(request, limit)
            ep = store.get(name)
            active = ep.active  # read once: the whole request uses this config
            if active is None:
                raise ApiError(503, "TEMPORARILY_UNAVAILABLE", f"Endpoint '{name}' is not ready yet (its config is "
                                                               f"loading); retry shortly.", retry_after(1))
            target = seen["served"] = served if served is not None else active.route()
            model = active.models.get(target)
            if model is None:
                raise ApiError(404, "RESOURCE_DOES_NOT_EXIST",
                               f"Endpoint '{name}' has no served model '{target}' (serves {sorted(active.models)})")
            seen["model"] = model
            if ep.cold.idle_s is not None and target in active.spec.scale_to_zero:
                wait = ep.cold.wait_s(target)
                if wait is not None:
                    raise ApiError(503, "TEMPORARILY_UNAVAILABLE",
                                   f"served entity '{target}' of endpoint '{name}' is scaling up from zero "
                                   f"(simulated cold start, {wait:.1f}s left); retry later", retry_after(wait))
            try:
                if len(body) <= _INLINE_BODY_BYTES:  # small: no thread hop
                    out = score(model, body, seen)
                else:  # large: keep the event loop free for other requests
                    out = await run_in_threadpool(score, model, body, seen)
            except ApiError:
                raise
            except Exception as exc:  # noqa: BLE001 - a model error answers 500; the server stays up
                store.log(f"{name}/{target}: {''.join(traceback.format_exception(exc))[-2000:]}")
                raise ApiError(500, "INTERNAL_ERROR", f"model {model.entity_name}/{model.version} failed: "
                                                      f"{type(exc).__name__}: {str(exc)[:300]}") from None
            return Response(out, media_type="application/json",
                            headers={"x-served-entity": target, "x-served-version": model.version}), seen
        except ApiError as exc:
            return _error_response(exc.status, exc.error_code, exc.message, exc.headers), seen

    # ---- the inference log's hook: one record per invocation, handed to on_invocation ----
    in_flight = [0]  # invocations being answered, besides the one being logged
    async def _invoke(request: Request, name: str, served: str | None) -> Response:
        if on_invocation is None:
            return (await _answer(request, name, served))[0]
        started_ms, t0 = int(time.time() * 1000), time.perf_counter()
        in_flight[0] += 1
        try:
            response, seen = await _answer(request, name, served)
        finally:
            in_flight[0] -= 1
        model = seen.get("model")
        request_id = uuid.uuid4().hex
        response.headers["x-request-id"] = request_id
        record = InvocationRecord(
            databricks_request_id=request_id,
            client_request_id=seen["client_request_id"] if "client_request_id" in seen
            else _client_request_id(seen["body"]),
            timestamp_ms=started_ms, execution_time_ms=(time.perf_counter() - t0) * 1000,
            status_code=response.status_code, endpoint=name, served_entity=seen["served"],
            model_name=model.entity_name if model else None, model_version=model.version if model else None,
            request=seen["body"], response=bytes(response.body))
        if in_flight[0] and len(record.request) > _THREAD_LOG_BYTES:
            # the copy into the log releases the GIL: in a thread it overlaps the other requests
            # (throughput 0.93x of no log against 0.89x inline); alone, the thread hop costs more
            await run_in_threadpool(on_invocation, record)
        else:
            on_invocation(record)
        return response

    @api.post("/serving-endpoints/{name}/invocations")
    async def invoke(name: str, request: Request) -> Response:
        return await _invoke(request, name, None)

    @api.post("/serving-endpoints/{name}/served-models/{served}/invocations")
    async def invoke_served(name: str, served: str, request: Request) -> Response:
        return await _invoke(request, name, served)

    app.include_router(api)
    return app
