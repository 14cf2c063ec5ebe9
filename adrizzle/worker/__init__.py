"""The worker: control connection to the driver, slot processes that run the tasks, the CLI."""
