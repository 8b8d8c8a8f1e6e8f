"""A fake Azure OpenAI door in front of a real OpenAI-compatible server."""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web

from tests.providers.fakes.base import Fake


class FakeAzureFront(Fake):
    """Azure OpenAI's door in front of a real OpenAI-compatible server: it answers
    ``{endpoint}/openai/deployments/{name}/...`` only with an ``api-key`` header and an
    ``api-version`` query (Azure's error shapes otherwise) and forwards the rest, as
    Azure forwards to its deployment. ``scenario = "cut"`` drops the connection partway
    through a streamed answer."""

    API_KEY = "0123456789abcdef0123456789abcdef"

    def __init__(self, upstream: str, upstream_key: str) -> None:
        super().__init__()
        self.upstream = upstream
        self.upstream_key = upstream_key

    async def handle(self, request: web.Request) -> web.StreamResponse:
        m = re.fullmatch(r"/openai/deployments/[^/]+(/.+)", request.path)
        if not m or "api-version" not in request.query:
            return web.json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, status=404
            )
        if request.headers.get("api-key") != self.API_KEY:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."
            )
            return web.json_response({"error": {"code": "401", "message": message}}, status=401)
        headers = {
            "authorization": f"Bearer {self.upstream_key}",
            "content-type": "application/json",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.upstream + "/v1" + m[1], data=await request.read(), headers=headers
            ) as up,
        ):
            if up.content_type != "text/event-stream":
                return web.Response(
                    status=up.status, body=await up.read(), content_type=up.content_type
                )
            pieces = [chunk async for chunk in up.content.iter_any()]
        if self.scenario == "cut":
            end = re.search(rb"\r?\n\r?\n", b"".join(pieces))  # the first event
            assert end is not None
            first = b"".join(pieces)[: end.end()]
            return await self.stream(request, "text/event-stream", [first], cut=True)
        return await self.stream(request, "text/event-stream", pieces)
