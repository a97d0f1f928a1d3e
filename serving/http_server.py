"""The HTTP/1.1 transport of the REST API: bounded threads, a deadline per request, a cap on connections.

One thread runs an asyncio loop that accepts connections and reads requests; only a whole request
(request line, headers, body) is handed to a pool of `num_threads` threads, which run the model. So a
client that opens a connection and sends nothing, or half a request line, holds a socket and a coroutine
until its deadline, never a thread, and requests from other clients keep being answered. As TF
Serving's --rest_api_timeout_in_ms: a request that is not read and answered within `timeout_seconds`
of the connection starting to wait for it is closed (an idle keep-alive connection too). Connections
past `max_connections` are closed as soon as they are accepted.
"""

import asyncio
import concurrent.futures
import http
import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)

# handle(method, path, body) -> (HTTP code, payload, content type); runs on the thread pool.
Handler = Callable[[str, str, bytes], tuple[int, bytes, str]]
MAX_HEADER_LINES = 100
MAX_LINE_BYTES = 64 * 1024
_DRAIN_FACTOR = 16  # bodies up to this many times the limit are read and dropped before the 413; larger: closed


class _Close(Exception):
    """Ends the connection (after what was already written)."""


class HttpServer:
    """Serves `handle` over HTTP/1.1 with keep-alive until `stop()`."""

    def __init__(self, handle: Handler, host: str, port: int, num_threads: int, timeout_seconds: float,
                 max_request_bytes: int, max_connections: int):
        if num_threads < 1 or timeout_seconds <= 0 or max_connections < 1:
            raise ValueError(f"the REST API needs num_threads >= 1, a timeout > 0 and max_connections >= 1, got "
                             f"{num_threads}, {timeout_seconds}, {max_connections}")
        self._handle, self.timeout, self.max_request_bytes = handle, timeout_seconds, max_request_bytes
        self.max_connections, self.open_connections = max_connections, 0
        self._pool = concurrent.futures.ThreadPoolExecutor(num_threads, thread_name_prefix="rest-api")
        self._loop = asyncio.new_event_loop()
        try:
            self._server = self._loop.run_until_complete(asyncio.start_server(
                self._connection, host, port, limit=MAX_LINE_BYTES, reuse_address=True))
        except OSError as e:
            self._loop.close()
            raise OSError(f"could not bind {host}:{port} for the REST API ({e.strerror})") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self._thread = threading.Thread(target=self._loop.run_forever, name="rest-api-loop", daemon=True)

    def start(self) -> "HttpServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ---- one connection: requests until it closes, fails or runs out of time ----------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open_connections >= self.max_connections:
            writer.close()  # refused: past the bound, a connection is not even read
            return
        self.open_connections += 1
        try:
            while await asyncio.wait_for(self._request(reader, writer), self.timeout):
                pass
        except (asyncio.TimeoutError, _Close, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass  # out of time, closed by either side, or a line past MAX_LINE_BYTES: the connection ends
        finally:
            self.open_connections -= 1
            writer.close()

    async def _request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Reads and answers one request; False when the connection should end."""
        line = await reader.readline()
        if not line.strip():
            return bool(line)  # EOF ends; a stray blank line between requests is skipped
        parts = line.decode("latin-1").split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            await self._reply(writer, 400, b'{"error": "malformed request line"}', "application/json", close=True)
            raise _Close
        method, target, version = parts
        headers = await self._headers(reader)
        keep_alive = (headers.get("connection", "").lower() != "close" if version == "HTTP/1.1"
                      else headers.get("connection", "").lower() == "keep-alive")
        try:
            length = int(headers.get("content-length") or 0)
            if length < 0:
                raise ValueError
        except ValueError:  # the body cannot be delimited
            await self._reply(writer, 400, ('{"error": "Content-Length must be a number of bytes, got %r"}'
                                            % headers.get("content-length")).encode(), "application/json", close=True)
            raise _Close from None
        if headers.get("expect", "").lower() == "100-continue" and length <= self.max_request_bytes:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # curl waits for this before a body over 1 KiB
        if length > self.max_request_bytes:
            closing = length > _DRAIN_FACTOR * self.max_request_bytes
            if not closing:
                await self._discard(reader, length)  # read, not kept: the client gets its answer, not a broken pipe
            message = f'{{"error": "request of {length} bytes is larger than --max_request_bytes {self.max_request_bytes}"}}'
            await self._reply(writer, 413, message.encode(), "application/json", close=closing)
            return not closing
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        code, payload, content_type = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._handle, method.upper(), path, body)
        await self._reply(writer, code, payload, content_type, close=not keep_alive)
        return keep_alive

    @staticmethod
    async def _headers(reader: asyncio.StreamReader) -> dict[str, str]:
        headers = {}
        for _ in range(MAX_HEADER_LINES):
            line = await reader.readline()
            if not line:
                raise _Close
            if line in (b"\r\n", b"\n"):
                return headers
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        raise _Close  # more header lines than any client sends

    @staticmethod
    async def _discard(reader: asyncio.StreamReader, length: int) -> None:
        while length > 0:
            chunk = await reader.read(min(length, 1 << 16))
            if not chunk:
                raise _Close
            length -= len(chunk)

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, code: int, payload: bytes, content_type: str,
                     close: bool = False) -> None:
        try:
            reason = http.HTTPStatus(code).phrase
        except ValueError:
            reason = "Client Closed Request" if code == 499 else ""
        head = (f"HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
                + ("Connection: close\r\n" if close else "") + "\r\n")
        writer.write(head.encode("latin-1") + payload)
        await writer.drain()
