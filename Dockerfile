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
# Or add --cap-add SYS_ADMIN: live watching then uses fanotify, which has no such limit.
# The recommended install is native (pip + the systemd unit in packaging/); this image is for
# hosts where everything runs in containers.
#
# Build it after packaging/build-wheels, so that the image installs the very wheel the release
# ships for its CPU (dist/scanarr-*-manylinux2014_<cpu>.whl):
#   packaging/build-wheels && docker build -t scanarr .
# Without that wheel in dist/, the first stage builds it with the same recipe (zig linker,
# manylinux2014). Other bases (a mirror, a pinned digest): --build-arg RUST_IMAGE=...
# --build-arg PYTHON_IMAGE=... (the Python base needs python3 with venv, and setpriv).
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# --- the manylinux2014 abi3 wheel for this CPU ------------------------------------------------
FROM ${RUST_IMAGE} AS wheel
WORKDIR /src
COPY . .
RUN set -eu; \
    case "$(uname -m)" in \
      x86_64) cpu=x86_64 ;; aarch64) cpu=aarch64 ;; armv7l | armv8l) cpu=armv7l ;; \
      *) echo "scanarr: no wheel for $(uname -m)" >&2; exit 1 ;; \
    esac; \
    mkdir /wheels; \
    for wheel in dist/scanarr-*-cp310-abi3-manylinux2014_$cpu.manylinux_2_17_$cpu.whl; do \
      if [ -f "$wheel" ]; then cp "$wheel" /wheels/; fi; \
    done; \
    if [ -z "$(ls /wheels)" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && python3 -m venv /opt/build \
      && /opt/build/bin/pip install --no-cache-dir "maturin>=1.9,<2" "ziglang>=0.15,<0.18" \
      && /opt/build/bin/maturin build --release --zig --compatibility manylinux2014 --out /wheels; \
    fi; \
    ls /wheels

# --- run --------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
COPY --from=wheel /wheels /wheels
RUN python3 -m venv /opt/scanarr \
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
# /livez, not /readyz: an API that is down must not get the watcher restarted. The port is the
# one SCANARR_METRICS_ADDR names.
HEALTHCHECK --interval=60s --timeout=5s --start-period=20s \
  CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('SCANARR_METRICS_ADDR', ':9469').rpartition(':')[2]; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=4)"]
ENTRYPOINT ["/usr/local/bin/scanarr-entrypoint"]
CMD ["scanarr-watcher"]
