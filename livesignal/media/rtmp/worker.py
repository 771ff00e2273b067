"""What the RTMP pull and push threads share: a worker thread the event loop can await.

Each RTMP stream runs in its own named daemon thread (`Worker`): everything blocking
(network I/O, decode, encode) happens there, and the event loop only moves frames and
packets in and out through `Worker.call_soon`. `media_threads` lists the ones still running.
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

THREAD_PREFIX = "livesignal-media"
MS = fractions.Fraction(1, 1000)  # the time base of relayed video and of FLV
_ids = itertools.count(1)


def media_threads() -> list[threading.Thread]:
    """Media worker threads started and still running (for tests and monitoring)."""
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


def redact_url(url: str) -> str:
    """A URL fit for logs: its query (push signatures) removed."""
    return url.split("?", 1)[0]


class Worker:
    """A named daemon thread whose end the event loop can await."""

    def __init__(self, kind: str, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self._loop = loop
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._done: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(
            target=self._main, name=f"{THREAD_PREFIX}-{kind}-{next(_ids)}", daemon=True
        )

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        try:
            self.run()
        except Exception:
            log.exception("%s for %s crashed", self._thread.name, redact_url(self.url))
        finally:
            self.call_soon(self._finished)

    def _finished(self) -> None:
        if not self._done.done():
            self._done.set_result(None)

    def run(self) -> None:
        raise NotImplementedError

    def call_soon(self, callback: Any, *args: Any) -> bool:
        """Run `callback(*args)` on the event loop; False once the loop is gone."""
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            self._stop.set()
            return False
        return True

    def sleep(self, seconds: float) -> None:
        """Wait between retries; `kick()` or `stop()` end the wait early."""
        self._wake.wait(seconds)
        self._wake.clear()

    def kick(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def stop(self, timeout: float = 5.0) -> bool:
        """Ask the thread to end and wait for it; False if it is still blocked after timeout."""
        self.request_stop()
        if not self._thread.is_alive() and not self._thread.ident:
            return True  # never started
        deadline = self._loop.time() + timeout
        try:
            await asyncio.wait_for(asyncio.shield(self._done), timeout)
            # `_done` is set from the thread's last statement; wait out its actual exit.
            while self._thread.is_alive() and self._loop.time() < deadline:
                await asyncio.sleep(0.001)
        except TimeoutError:
            pass
        if self._thread.is_alive():
            log.warning("%s did not stop within %.1fs", self._thread.name, timeout)
            return False
        return True
