# Roadie's one image: the API, the relay, beat and every worker pool run from it.
FROM python:3.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY roadie roadie
COPY api api
COPY workers workers
COPY tasks tasks
COPY schedules schedules
COPY models models
COPY migrations migrations
RUN uv venv /opt/roadie && uv pip install --python /opt/roadie/bin/python --no-cache .

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 10001 roadie
COPY --from=build /opt/roadie /opt/roadie
WORKDIR /app
COPY alembic.ini ./
COPY migrations migrations
ENV PATH=/opt/roadie/bin:$PATH PYTHONUNBUFFERED=1
USER roadie
EXPOSE 8000
CMD ["uvicorn", "api.app:app", "--host", "0.0.0.0", "--port", "8000"]
