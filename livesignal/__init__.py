"""livesignal: real-time signalling for live-streaming apps."""

__version__ = "0.1.0"
