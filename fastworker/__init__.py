"""fastworker."""
