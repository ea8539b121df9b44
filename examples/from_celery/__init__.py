"""The small app of docs/from-celery.md, written for fastworker (``tasks``, ``app``)."""
