# The Readside image: built once (`docker compose build`), run as `readside projector`,
# `readside api`, `readside migrate` or `readside load`. No install step at container start.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first (pinned in pyproject.toml), so a code change rebuilds only the last layers.
COPY pyproject.toml README.md ./
COPY api ./api
COPY projector ./projector
COPY schemas ./schemas
COPY shared ./shared
RUN pip install . && useradd --system --uid 10001 --no-create-home readside

USER readside
ENTRYPOINT ["readside"]
CMD ["--help"]
