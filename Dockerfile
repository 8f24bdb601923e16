# The Readside image: built once (`docker compose build`), run as `readside projector`,
# `readside api`, `readside migrate` or `readside load`. No install step at container start.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# Installed from /src, which is then removed: everything runs from the installed `readside` package
# (a source tree in the working directory would shadow it for `python -m readside...`).
COPY pyproject.toml setup.py README.md constraints.txt /src/
COPY readside /src/readside
COPY api /src/api
COPY projector /src/projector
COPY readmodels /src/readmodels
COPY schemas /src/schemas
COPY shared /src/shared
RUN PIP_CONSTRAINT=/src/constraints.txt pip install /src && rm -rf /src \
    && useradd --system --uid 10001 --no-create-home readside
WORKDIR /app

USER readside
ENTRYPOINT ["readside"]
CMD ["--help"]
