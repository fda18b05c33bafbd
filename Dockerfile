# scanarr watcher agent in a container, in the *arr conventions (linuxserver.io style):
#
#   docker run -d --name scanarr \
#     -e PUID=1000 -e PGID=1000 -e UMASK=002 \
#     -e SCANARR_API_URL=ws://scanarr:8081/ws/watcher -e SCANARR_AUTH_TOKEN=... \
#     -v /srv/scanarr/config:/config \
#     -v /mnt/pool/data:/data \
#     scanarr
#
# One /data mount holding torrents/, media/... (not one mount per folder): hardlinks only work
# inside one mount, and the API's volumes are then /data/... paths as this container sees them.
# The inotify limit (fs.inotify.max_user_watches) is the host's: raise it there.
# The recommended install is native (pip + the systemd unit in packaging/); this image is for
# hosts where everything runs in containers.

# --- build: the abi3 wheel ------------------------------------------------------------------
FROM rust:1-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"
WORKDIR /src
COPY . .
RUN /opt/maturin/bin/maturin build --release --out /wheels

# --- run ------------------------------------------------------------------------------------
FROM python:3.12-slim-bookworm
COPY --from=build /wheels /wheels
RUN python -m venv /opt/scanarr \
 && /opt/scanarr/bin/pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels
COPY packaging/docker-entrypoint.sh /usr/local/bin/scanarr-entrypoint

ENV PATH=/opt/scanarr/bin:$PATH \
    PUID=1000 \
    PGID=1000 \
    UMASK=002 \
    SCANARR_STATE_FILE=/config/watcher-state.json \
    SCANARR_METRICS_ADDR=:9469
VOLUME ["/config"]
# Metrics and health; reachable from outside only when published (-p 127.0.0.1:9469:9469).
EXPOSE 9469
# /livez, not /readyz: an API that is down must not get the watcher restarted.
HEALTHCHECK --interval=60s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9469/livez', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/scanarr-entrypoint"]
CMD ["scanarr-watcher"]
