#!/bin/sh
# Chooses the configuration for the container:
#   PORTICO_CONF set                      -> that file (mount your own)
#   PORTICO_ADMIN_KEY of >= 16 characters -> portico-public-admin.yaml (admin on 0.0.0.0:9180)
#   otherwise                             -> portico.yaml (admin on 127.0.0.1:9180 only)
# Extra arguments are passed to portico (e.g. -t to check the configuration).
set -eu
conf="${PORTICO_CONF:-}"
if [ -z "$conf" ]; then
  key="${PORTICO_ADMIN_KEY:-}"
  if [ "${#key}" -ge 16 ]; then
    conf=/etc/portico/portico-public-admin.yaml
  else
    conf=/etc/portico/portico.yaml
    if [ -n "$key" ]; then
      echo "portico-entrypoint: PORTICO_ADMIN_KEY is shorter than 16 characters; keeping the admin API on 127.0.0.1" >&2
    fi
  fi
fi
exec /usr/local/bin/portico -c "$conf" "$@"
