"""The signalling core: model, services, store and broker, and the WebSocket transport."""
