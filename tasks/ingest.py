"""The ``track.ingest`` pipeline: a parent job with one child job per stage (issue 3)."""
