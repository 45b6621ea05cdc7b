"""What both sides share, without Flask: configuration, Redis, the event store, queues, logs, the
secret rule and the worker-side counters. Imports nothing else of the project."""
