"""Live parts of pages: a job's (or a deployment's, or an upload's) part of the page sent
again over Server-Sent Events whenever an event of its correlation id lands, read through
the event feed's use case; HTMX's SSE extension swaps it in. Without JavaScript the page
shows the state it was rendered with (reload for more).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from litestar.response import ServerSentEvent, ServerSentEventMessage

from cvops.gateway.core import Gateway
from cvops.gateway.feed import FeedService

# SSE event names the pages listen for: ``update`` swaps the part in, ``done`` closes the feed.
UPDATE = "update"
DONE = "done"


@dataclass
class LiveFeed:
    """Follows one correlation id and re-renders a part of a page on each of its events."""

    gateway: Gateway
    feed: FeedService

    def position(self) -> int:
        """The projection's position now: read before a page's state, passed back as
        ``after`` when it connects, so no event between the two is missed."""
        return self.gateway.runner.position

    def stream(
        self, correlation_id: str, after: int, render: Callable[[], tuple[str, bool]]
    ) -> ServerSentEvent:
        """``render()`` (the part's HTML, whether it has ended) after each new event; the
        feed closes with ``done`` once the part says it has ended."""

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            html, ended = render()
            yield ServerSentEventMessage(event=UPDATE, data=html)
            if ended:
                yield ServerSentEventMessage(event=DONE, data=DONE)
                return
            async for item in self.feed.correlated(correlation_id, max(after, 0), follow=True):
                if item is None:
                    yield ServerSentEventMessage(comment="keep-alive")
                    continue
                html, ended = render()
                yield ServerSentEventMessage(id=item.seq, event=UPDATE, data=html)
                if ended:
                    yield ServerSentEventMessage(event=DONE, data=DONE)
                    return

        return ServerSentEvent(messages(), headers={"Cache-Control": "no-store"})
