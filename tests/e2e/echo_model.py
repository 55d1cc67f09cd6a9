"""A stand-in model for browser tests of rendering: an OpenAI-compatible server (run in a thread)
whose reply is the last user message, verbatim, streamed in pieces. The playground serves it through
its real openai_compat backend, so a test controls exactly what a "model reply" contains (e.g. script
payloads) without depending on what a small model happens to write."""

from __future__ import annotations

import json
import threading
import time

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tests.conftest import free_port


def _app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "tests"}]}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        text = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
        if isinstance(text, list):
            text = "".join(p.get("text", "") for p in text)
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "echo",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "echo",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )

        def events():
            def chunk(delta, finish=None):
                payload = {
                    "id": "echo",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": "echo",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                return f"data: {json.dumps(payload)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            for i in range(0, len(text), 40):
                yield chunk({"content": text[i : i + 40]})
            yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class EchoModelServer:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._server = uvicorn.Server(
            uvicorn.Config(_app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, name="echo-model", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the echo model server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
