#!/usr/bin/env bash
# nodexd-entrypoint: expands ${VAR} in the config from the environment, then runs nodexd on it.
# Usage: nodexd-entrypoint [nodexd options]   run nodexd --config <expanded> [options]
#        nodexd-entrypoint check              validate the expanded config and exit
#        nodexd-entrypoint COMMAND [ARGS]     run COMMAND instead (e.g. bash)
# Environment: NODEX_CONFIG (default /etc/nodex/nodexd.yaml), NODEX_RUNTIME_DIR (where the
# expanded copy goes, default $TMPDIR or /tmp). Only ${NAME} is expanded, not in comment lines;
# an unset NAME is an error.
set -euo pipefail
config=${NODEX_CONFIG:-/etc/nodex/nodexd.yaml}
here=$(dirname "$(readlink -f "$0")")
nodexd=$here/nodexd
[ -x "$nodexd" ] || nodexd=nodexd

if [ "$#" -gt 0 ] && [ "$1" != check ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi

# shellcheck disable=SC2016  # a literal ${ is what we look for
if grep -qF '${' "$config"; then
  umask 077
  out_dir=${NODEX_RUNTIME_DIR:-${TMPDIR:-/tmp}}
  expanded=$(mktemp "$out_dir/nodexd.XXXXXX.yaml")
  # perl-base is Essential in Debian, so present even in debian:12-slim.
  perl -pe 'next if /^\s*#/; s/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/defined $ENV{$1} ? $ENV{$1}
            : die "nodexd-entrypoint: $ARGV:$.: \${$1} is not set\n"/ge' "$config" >"$expanded" ||
    { rm -f "$expanded"; exit 2; }
  echo "nodexd-entrypoint: $config expanded into $expanded" >&2
  config=$expanded
fi

if [ "${1:-}" = check ]; then
  exec "$nodexd" --check-config "$config"
fi
exec "$nodexd" --config "$config" "$@"
