"""A FastAPI web tier run as its own process by ``tests/test_asgi_redis.py``: it receives the
platform's webhooks through ``session.webhook_asgi()`` and publishes them on a RedisBus.

    python tests/fastapi_worker.py --redis URL --base-url URL

It listens on 127.0.0.1 and a port the system picks, prints ``ready http://127.0.0.1:PORT``
once it serves, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asgi_server import uvicorn_server
from fastapi import FastAPI

import workflows_async as wa


def create_app(session: wa.Session) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with session:
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/webhooks", session.webhook_asgi())
    return app


async def main(args: argparse.Namespace) -> None:
    # The web tier needs no credentials: it only verifies (the key endpoint takes no token).
    session = wa.Session(args.base_url, allow_insecure_http=True, bus=wa.RedisBus(args.redis))
    async with uvicorn_server(create_app(session)) as url:  # after the lifespan started
        print(f"ready {url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--base-url", required=True)
    asyncio.run(main(parser.parse_args()))
