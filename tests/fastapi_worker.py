"""A FastAPI web tier run as its own process by ``tests/test_asgi_redis.py``: it receives the
platform's webhooks through ``session.webhook_asgi()`` and publishes them on a RedisBus.

    python tests/fastapi_worker.py --port P --redis URL --base-url URL
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

import workflows_async as wa


def create_app(session: wa.Session) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with session:
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/webhooks", session.webhook_asgi())

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--base-url", required=True)
    args = parser.parse_args()
    # The web tier needs no credentials: it only verifies (the key endpoint takes no token).
    session = wa.Session(args.base_url, allow_insecure_http=True, bus=wa.RedisBus(args.redis))
    uvicorn.run(create_app(session), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
