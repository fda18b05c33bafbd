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
  # Every capability is dropped, except CAP_SYS_ADMIN when the container was given it
  # (--cap-add SYS_ADMIN) and SCANARR_LIVE_BACKEND is not inotify: live watching then uses
  # fanotify (one mark per filesystem, no inotify watch limit), which needs it.
  keep=-all
  capbnd=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  if [ "${SCANARR_LIVE_BACKEND:-auto}" != inotify ] && [ $(( 0x$capbnd & 0x200000 )) -ne 0 ]; then
    keep=-all,+sys_admin
  fi
  exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups --no-new-privs \
    --inh-caps="$keep" --ambient-caps="$keep" --bounding-set="$keep" -- "$@"
fi
# Started with --user: run as that user.
exec "$@"
