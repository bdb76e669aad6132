"""``transduce serve``: load the models, build the app (``transduce/server/``) and run it under uvicorn (this
module is imported only for this command: it brings FastAPI and torch).

SIGTERM or Ctrl-C first drains the open streams (new ones are refused with close code 1013; the open ones get
their input ended and their finals sent, up to ``DRAIN_SECONDS``), then uvicorn shuts down.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import uvicorn

from transduce.errors import UsageError
from transduce.server.app import Served, create_app
from transduce.server.limits import ServeLimits

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODELS = (ROOT / "models" / "multi30k-en-de", ROOT / "models" / "digits-hybrid-streaming")
DRAIN_SECONDS = 30.0


def serve(args: argparse.Namespace) -> int:
    paths = args.model or [str(p) for p in DEFAULT_MODELS]
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port must be in 1..65535, got {args.port}")
    if args.chunk_ms <= 0:
        raise UsageError(f"--chunk-ms must be positive, got {args.chunk_ms:g}")
    if args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")
    torch.set_num_threads(args.threads)  # the workers run side by side: more threads each oversubscribe the CPU
    try:
        limits = ServeLimits(max_streams=args.max_streams, api_key=args.api_key or os.environ.get("TRANSDUCE_API_KEY"))
    except ValueError as err:
        raise UsageError(f"--{str(err).replace('_', '-')}") from None
    served = Served.load(paths, limits=limits, data_dir=args.data_dir, chunk_ms=args.chunk_ms,
                         batching=not args.no_batching)
    names = ", ".join(f"{m.name} ({m.task})" for m in served.models.values())
    print(f"serving {names} on http://{args.host}:{args.port}", file=sys.stderr)
    config = uvicorn.Config(create_app(served), host=args.host, port=args.port, log_level="warning",
                            ws_max_size=limits.max_body_bytes, timeout_graceful_shutdown=5)
    DrainingServer(config, served).run()
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, draining the open streams on the first exit signal before it closes connections."""

    def __init__(self, config: uvicorn.Config, served: Served) -> None:
        super().__init__(config)
        self.served, self.drained = served, False

    async def on_tick(self, counter: int) -> bool:
        if self.should_exit and not self.drained:
            self.drained = True
            await self.served.drain(DRAIN_SECONDS)
        return await super().on_tick(counter)
