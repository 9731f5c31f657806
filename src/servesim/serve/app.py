"""The HTTP routes: OpenAI completions and chat (streaming or not), models, health, version
and Prometheus metrics, with vLLM's error bodies and optional bearer-token auth."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from servesim import __version__
from servesim.scenario import Scenario
from servesim.serve.config import ServeConfig
from servesim.serve.driver import Driver, Stream
from servesim.serve.errors import APIError
from servesim.serve.metrics import ServeMetrics
from servesim.serve.protocol import Job, parse
from servesim.serve.tokens import block_hashes, filler, load_encoder
from servesim.serve.trace import ServedTrace
from servesim.workload.request import RequestState


class Server:
    """Everything one server holds: the driver, metrics, tokenizer and served-request trace."""

    def __init__(self, scenario: Scenario, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.model_name = cfg.served_model_name or scenario.model
        self.seed = scenario.seed
        self.tokenizer, self.encode = load_encoder(cfg.tokenizer)
        self.driver = Driver(scenario, cfg.time_scale)
        self.metrics = self.driver.observer = ServeMetrics(self.driver, self.model_name)
        # opened last: a scenario that cannot be built leaves no file behind
        self.trace = ServedTrace(cfg.trace_out) if cfg.trace_out else None
        self.driver.on_arrival = self.trace.add if self.trace else None
        self.created = int(time.time())

    def submit(self, job: Job) -> Stream:
        hashes = block_hashes(job.tokens, self.driver.config.block_size)
        try:
            stream = self.driver.submit(len(job.tokens), job.output_len, hashes, job.max_tokens, job.priority,
                                        {"finish_reason": job.finish_reason})
        except RuntimeError as e:
            raise APIError(str(e), status=500) from None
        req = stream.req
        if req.state == RequestState.REJECTED:
            raise APIError(f"the emulated engine cannot serve this request: {req.extra['reject_reason']}")
        return stream


def create_app(scenario: Scenario, cfg: ServeConfig) -> FastAPI:
    server = Server(scenario, cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        server.driver.start_clock()  # simulated time 0 = when the server starts serving
        task = asyncio.create_task(server.driver.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if server.trace:
                server.trace.close()

    app = FastAPI(title="servesim", version=__version__, lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=500 if server.driver.error else 200)

    @app.get("/version")
    async def version() -> dict:
        return {"version": __version__}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(server.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        card = {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "servesim",
                "root": server.model_name, "parent": None, "max_model_len": server.driver.config.max_model_len}
        return {"object": "list", "data": [card]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _generate(server, "completion", request)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await _generate(server, "chat", request)

    return app if cfg.api_key is None else _with_api_key(app, cfg.api_key)


async def _generate(server: Server, kind: str, request: Request) -> Response:
    d = server.driver
    job = parse(kind, await request.body(), server.encode, d.config.max_model_len, server.model_name,
                server.cfg.eos_mean_tokens, server.seed)
    stream = server.submit(job)
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{stream.req.id:08x}"
    head = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": int(time.time()), "model": server.model_name}
    if job.stream:
        return StreamingResponse(_sse(server, job, stream, head), media_type="text/event-stream")
    watcher = asyncio.create_task(_abort_on_disconnect(request, d, stream))
    try:
        while not stream.done:
            await stream.event.wait()
            stream.event.clear()
    finally:
        watcher.cancel()
        if not stream.done:  # the handler was cancelled (server stopping)
            d.abort(stream)
    if stream.aborted:
        return Response(status_code=499)  # nobody is listening any more
    if d.error is not None:
        raise APIError(f"the simulated engine stopped: {d.error}", status=500)
    text = "".join(filler(stream.req.id, stream.req.num_output_tokens))
    choice = {"index": 0, "logprobs": None, "finish_reason": job.finish_reason, "stop_reason": job.stop_reason}
    if kind == "chat":
        head["object"] = "chat.completion"
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return JSONResponse({**head, "choices": [choice], "usage": _usage(job, stream.req.num_output_tokens)})


async def _abort_on_disconnect(request: Request, driver: Driver, stream: Stream) -> None:
    """A non-streaming client that hangs up frees its request too (the body is already read,
    so the next ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    driver.abort(stream)


def _usage(job: Job, n: int) -> dict:
    return {"prompt_tokens": len(job.tokens), "completion_tokens": n, "total_tokens": len(job.tokens) + n}


def _frame(obj: dict) -> str:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"


async def _sse(server: Server, job: Job, stream: Stream, head: dict):
    """Server-sent events: one chunk per token when the simulation emits it (chat: the role
    chunk goes out with the first token, as vLLM sends it), the finish reason on the last
    token's chunk, then the usage chunk if asked for, then [DONE]."""
    chat = job.kind == "chat"
    req = stream.req
    sent = 0
    try:
        while True:
            await stream.event.wait()
            stream.event.clear()
            if stream.aborted:
                return
            ready = stream.num_ready
            frames = []
            if chat and sent == 0 and ready:
                frames.append(_frame({**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                           "logprobs": None, "finish_reason": None}]}))
            for i in range(sent, ready):
                last = i == req.output_len - 1
                choice = {"index": 0, "logprobs": None, "finish_reason": job.finish_reason if last else None}
                token = filler(req.id + i, 1)[0]
                if chat:
                    choice["delta"] = {"content": token}
                else:
                    choice["text"] = token
                    choice["stop_reason"] = job.stop_reason if last else None
                chunk = {**head, "choices": [choice]}
                if job.continuous_usage:
                    chunk["usage"] = _usage(job, i + 1)
                frames.append(_frame(chunk))
            sent = ready
            if frames:
                yield "".join(frames)
            if stream.done and sent >= stream.num_ready:
                break
        if server.driver.error is not None:
            yield _frame(APIError(f"the simulated engine stopped: {server.driver.error}", status=500).body())
        elif job.include_usage:
            yield _frame({**head, "choices": [], "usage": _usage(job, stream.req.num_output_tokens)})
        yield "data: [DONE]\n\n"
    finally:
        if not stream.done:  # the client disconnected mid-stream: free its simulated request
            server.driver.abort(stream)


def _with_api_key(app: FastAPI, key: str):
    """Reject /v1 requests without `Authorization: Bearer <key>` (vLLM's 401 body)."""
    expected = f"Bearer {key}".encode()

    async def asgi(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/v1"):
            auth = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(auth, expected):
                await JSONResponse({"error": "Unauthorized"}, status_code=401)(scope, receive, send)
                return
        await app(scope, receive, send)

    asgi.app = app  # the FastAPI app, for tests and introspection
    return asgi
