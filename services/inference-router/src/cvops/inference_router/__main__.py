"""``python -m cvops.inference_router``: the KServe v2 router and its supervised Triton."""

import asyncio

import uvloop

from cvops.core import run_service
from cvops.inference_router.app import SERVICE, main

if __name__ == "__main__":
    # the router is a byte proxy on the hot path: libuv's loop halves its per-request cost
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    run_service(SERVICE, main)
