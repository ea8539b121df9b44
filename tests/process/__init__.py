"""Tests of real ``fastworker run`` processes."""
