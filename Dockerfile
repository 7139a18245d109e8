# The cs-relay worker (and its other commands: mocks, send, dlq) as one image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY streams ./streams
COPY mockservers ./mockservers
COPY devtools ./devtools
RUN pip install . && useradd --system --home /app csrelay && mkdir -p /data && chown csrelay /data

USER csrelay
ENV CS_RELAY_DATA_DIR=/data CS_RELAY_WEB_HOST=0.0.0.0
VOLUME ["/data"]
EXPOSE 6066
ENTRYPOINT ["cs-relay"]
CMD ["worker"]
