"""The driver's read-only status server: JSON status, Prometheus metrics, health, dashboard."""
