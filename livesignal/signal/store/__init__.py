"""Where state lives: the Store interface and its implementations."""
