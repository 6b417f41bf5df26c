#!/usr/bin/env bash
# Fails on an upward import between ferry's layers (see docs/architecture.md):
#
#   5  doors      http, console, run, daemon, main (the binary), progress
#   4  app        app                          (the composition root and the use-cases the doors
#                                               share; knows no door)
#   3  jobs       jobs, chat_format            (batch jobs and their line format, used by the app
#                                               and the doors)
#   2  engine     engine, tenants, mock_upstream, logging
#   1  providers  providers, store             (store sits beside: SQLite, used by jobs and doors)
#   0  core       core, config, private_fs, request_json  (pure rules, the typed config, owner-only
#                 files, parsing request bodies without echoing them)
#
# A module may import its own layer or a lower one, so nothing below the app imports the app
# or a door. Doors may use each other (the console starts the daemon's server) and any layer
# below them (the `Engine` handle is every door's way to the engine). Only code counts: `crate::x` (or `ferry::x` in the binary) on a
# line that is not a comment.
#
#   bash .ci/layers.sh [SRC_DIR]
set -euo pipefail

src=${1:-"$(dirname "${BASH_SOURCE[0]}")/../src"}

layer_of() {
  case $1 in
    core | config | private_fs | request_json) echo 0 ;;
    providers | store) echo 1 ;;
    engine | tenants | mock_upstream | logging) echo 2 ;;
    jobs | chat_format) echo 3 ;;
    app) echo 4 ;;
    http | console | run | daemon | main | progress | lib) echo 5 ;;
    *) echo "" ;;
  esac
}

# Upward imports allowed on purpose, as "FROM -> TO  # why". None today.
allowed=(
)

is_allowed() {
  local pair=$1 entry
  for entry in "${allowed[@]+"${allowed[@]}"}"; do
    [ "${entry%%#*}" = "$pair " ] && return 0
    [ "${entry%%#*}" = "$pair" ] && return 0
  done
  return 1
}

status=0
checked=0
while IFS= read -r file; do
  rel=${file#"$src"/}
  from=${rel%%/*}
  from=${from%.rs}
  from_layer=$(layer_of "$from")
  if [ -z "$from_layer" ]; then
    echo "layers: $rel: module \`$from\` has no layer; add it to .ci/layers.sh" >&2
    status=1
    continue
  fi
  checked=$((checked + 1))
  # Code lines only (not // comments or //! docs; string literals blanked), then every
  # `crate::x` or `ferry::x` path in them, as "LINE:x".
  while IFS=: read -r line to; do
    to_layer=$(layer_of "$to")
    [ -n "$to_layer" ] || continue
    if [ "$to_layer" -gt "$from_layer" ] && ! is_allowed "$from -> $to"; then
      echo "layers: $rel:$line: \`$from\` (layer $from_layer) imports \`$to\` (layer $to_layer)" >&2
      status=1
    fi
  done < <(awk '
    /^[[:space:]]*\/\// { next }
    {
      line = $0
      gsub(/"([^"\\]|\\.)*"/, "\"\"", line)
      while (match(line, /(crate|ferry)::[a-z_]+/)) {
        path = substr(line, RSTART, RLENGTH)
        sub(/^(crate|ferry)::/, "", path)
        print NR ":" path
        line = substr(line, RSTART + RLENGTH)
      }
    }' "$file")
done < <(find "$src" -name '*.rs' | sort)

if [ "$status" -eq 0 ]; then
  echo "layers: $checked files, no upward import"
fi
exit "$status"
