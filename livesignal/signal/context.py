"""What every service shares: settings, clock, store, broker and the credential makers."""

from __future__ import annotations

from dataclasses import dataclass

from livesignal.settings import Settings
from livesignal.signal.auth import RtcTokenCodec, StreamUrls, TokenCodec
from livesignal.signal.broker.base import Broker
from livesignal.signal.clock import Clock
from livesignal.signal.store.base import Store


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
