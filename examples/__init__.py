"""Runnable examples (``fastworker run examples/pingpong.toml``)."""
