"""An answer given before the request's body was read closes the connection, and says so.

A handler may answer without reading the body (a ``401`` to an upload, a refused push). The
connection then cannot carry another request: the unread bytes are still on it. ASGI servers
close it, but not always with ``Connection: close`` in the answer, and a client that sends its
next request on that connection (the upload again, with the token the ``401`` sent it for)
sees it drop. This middleware adds the header whenever the body has not been received to its
end by the time the answer starts, for every route of the app.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CloseUnreadBodies"]


def _has_body(scope: Scope) -> bool:
    for key, value in scope["headers"]:
        if key == b"content-length":
            return bool(value.strip() != b"0")
        if key == b"transfer-encoding":
            return True
    return False


class CloseUnreadBodies:
    """ASGI middleware; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        received = False

        async def watching_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                received = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not received:
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, watching_receive, closing_send)
