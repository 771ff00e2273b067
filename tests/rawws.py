"""A WebSocket client that reads only when told to: websockets' sans-I/O protocol over a plain
socket with a small receive buffer. For tests of what the server does to peers that stall."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlsplit

from websockets.client import ClientProtocol
from websockets.frames import Close
from websockets.http11 import Response
from websockets.uri import parse_uri


class StalledClient:
    def __init__(
        self, protocol: ClientProtocol, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.protocol = protocol
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, url: str, receive_buffer: int = 4096) -> StalledClient:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=receive_buffer)
        protocol = ClientProtocol(parse_uri(url))
        protocol.send_request(protocol.connect())
        client = cls(protocol, reader, writer)
        await client._flush()
        async with asyncio.timeout(5):
            while not any(isinstance(e, Response) for e in protocol.events_received()):
                if not await client._feed():
                    break
        if protocol.handshake_exc is not None:
            raise protocol.handshake_exc
        return client

    async def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)
        await self.writer.drain()

    async def _feed(self) -> bool:
        data = await self.reader.read(65536)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        return bool(data)

    async def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        await self._flush()

    async def read_until_close(self, timeout: float = 10.0) -> int | None:
        """Read everything; the close code the server sent, or None if the stream was cut."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    more = await self._feed()
                except ConnectionError:
                    return None
                for frame in self.protocol.events_received():
                    if isinstance(frame, Close) or getattr(frame, "opcode", None) == 8:
                        close = Close.parse(frame.data)
                        return close.code
                if not more:
                    return None

    def abort(self) -> None:
        self.writer.transport.abort()
