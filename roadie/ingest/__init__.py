"""Track ingest (issue 3): the upload, the media stages' database steps and the ``track.ingest`` pipeline."""
