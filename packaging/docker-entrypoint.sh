#!/bin/sh
# Entry point of the scanarr image, in the *arr conventions: the process runs as PUID:PGID
# with UMASK, its state lives in /config, the media under one /data mount.
set -eu

PUID="${PUID:-1000}"
PGID="${PGID:-1000}"
UMASK="${UMASK:-002}"

case "$PUID$PGID" in
  *[!0-9]*) echo "scanarr: PUID and PGID must be numbers (got PUID=$PUID PGID=$PGID)" >&2; exit 2 ;;
esac
umask "$UMASK"

if [ "$(id -u)" = 0 ]; then
  mkdir -p /config
  # The state file is 0600: after a PUID change the new user must own what the old one wrote.
  chown -R "$PUID:$PGID" /config
  exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups --no-new-privs \
    --inh-caps=-all --bounding-set=-all -- "$@"
fi
# Started with --user: run as that user.
exec "$@"
