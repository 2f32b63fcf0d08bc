"""Peer frameworks, run with the bench's own virtualenv (bench/.venv), each in its own process.

The modules here import only the standard library, redis and the peer itself, so they run without
mailpipe installed. Configuration comes from BENCH_* environment variables set by the bench.
"""
