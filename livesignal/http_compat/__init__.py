"""The REST compatibility layer: the documented endpoints over the shared operation table."""
