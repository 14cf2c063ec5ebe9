"""The wire protocol: framing, typed messages, authentication and the sans-I/O connection."""
