"""Event delivery: per-room ordered streams with bounded history, and user-directed events."""
