"""The Starlette intake API."""
