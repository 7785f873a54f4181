# Sourced by bench/scale.sh and bench/netns.sh.

# scale_build BUILD_DIR DO_BUILD TARGET... : Release build of the targets, plus scale_load.
scale_build() {
  local build="$1" do_build="$2"; shift 2
  if [ "$do_build" = 1 ]; then
    mkdir -p "$build"
    # -O2 raises format-truncation warnings that -Werror turns into errors in a plain
    # `-DCMAKE_BUILD_TYPE=Release` build; bench/run.sh passes the same flags.
    if ! { cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release \
             "-DCMAKE_C_FLAGS=-Wno-error=format-truncation -Wno-error=stringop-truncation" &&
           cmake --build "$build" -j"$(nproc)" --target "$@"; } >"$build/scale-build.log" 2>&1; then
      tail -30 "$build/scale-build.log" >&2
      echo "build failed (log: $build/scale-build.log)" >&2
      exit 1
    fi
  fi
  gcc -O2 -Wall -Wextra -o "$build/scale_load" "$here/scale_load.c"
}

# scale_kill_pidfile FILE: SIGTERM, then SIGKILL, every pid recorded in FILE that still runs.
scale_kill_pidfile() {
  local f="$1" pid left=()
  [ -f "$f" ] || return 0
  while read -r pid; do
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && { kill -TERM "$pid" 2>/dev/null || true; left+=("$pid"); }
  done <"$f"
  if [ "${#left[@]}" -gt 0 ]; then
    sleep 2
    for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  rm -f "$f"
}
