"""Benchmarks; importable so gunicorn can load ``bench.bare_app:create_app()``."""
