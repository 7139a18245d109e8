# The cs-relay worker (and its other commands: mocks, ingest, send, dlq) as one image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# constraints.txt pins every dependency to the versions `make test` ran with (CI
# installs from it too): what is deployed is what was tested.
COPY pyproject.toml README.md constraints.txt ./
COPY streams ./streams
COPY devtools ./devtools
RUN pip install -c constraints.txt . && useradd --system --uid 10001 --user-group --home /app csrelay && mkdir -p /data && chown csrelay /data

# A numeric user, so that Kubernetes' runAsNonRoot can check it (deploy/kubernetes/).
USER 10001:10001
ENV CS_RELAY_DATA_DIR=/data CS_RELAY_WEB_HOST=0.0.0.0
VOLUME ["/data"]
EXPOSE 6066
# The worker's /health (200 while the process serves); other commands (mocks, ingest)
# set their own check in docker-compose.yml. Python's urllib: the image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CS_RELAY_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["cs-relay"]
CMD ["worker"]
