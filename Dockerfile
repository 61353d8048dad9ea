# Roadie's one image: the API, the relay, beat, Flower and every worker pool run from it
# (docker-compose.yml picks the command). Two stages: the build stage resolves and installs the
# dependencies into a virtualenv; the runtime stage gets only that virtualenv, ffmpeg for the
# media pool, and runs as an unprivileged user.

# ---- build ------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN pip install uv
WORKDIR /src
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN uv venv /opt/roadie \
    && uv pip install --python /opt/roadie/bin/python --no-cache -r pyproject.toml
COPY roadie roadie
COPY api api
COPY workers workers
COPY tasks tasks
COPY schedules schedules
COPY models models
RUN uv pip install --python /opt/roadie/bin/python --no-cache --no-deps . \
    && /opt/roadie/bin/python -m compileall -q /opt/roadie/lib

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 roadie \
    && useradd --system --uid 10001 --gid roadie --home-dir /var/lib/roadie --shell /usr/sbin/nologin roadie \
    && install -d -o roadie -g roadie -m 0750 /var/lib/roadie
COPY --from=build /opt/roadie /opt/roadie
WORKDIR /app
# Only what `alembic upgrade head` reads at run time; the code itself is in the virtualenv, owned by root.
COPY alembic.ini ./
COPY migrations migrations
ENV PATH=/opt/roadie/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ROADIE_HOME=/var/lib/roadie
USER 10001:10001
EXPOSE 8000 5555
CMD ["roadie", "api", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]
