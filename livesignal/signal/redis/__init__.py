"""The Redis backend: store, broker and clock shared by every node (PROTOCOL §5)."""
