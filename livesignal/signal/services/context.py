"""What every service shares: settings, clock, store, broker and the credential makers."""

from __future__ import annotations

from dataclasses import dataclass

from livesignal.settings import Settings
from livesignal.signal.backends.base import Broker, Store
from livesignal.signal.model.auth import RtcTokenCodec, StreamUrls, TokenCodec
from livesignal.signal.model.clock import Clock


@dataclass(frozen=True, slots=True)
class ServiceContext:
    settings: Settings
    clock: Clock
    store: Store
    broker: Broker
    tokens: TokenCodec
    rtc_tokens: RtcTokenCodec
    urls: StreamUrls
    node_id: str  # this process, among the nodes sharing the store (its socket holds' owner)
