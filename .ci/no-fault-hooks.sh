#!/usr/bin/env bash
# Fails when the given ferry binary carries any fault-injection hook: the `fault injection:`
# panic messages, the console's FERRY_CONSOLE_PANIC_DRILL, or an `inject_panic` symbol. Those
# exist only with the `fault-injection` cargo feature, which `cargo test` turns on and a plain
# `cargo build --release` does not.
#
#   bash .ci/no-fault-hooks.sh target/release/ferry
set -euo pipefail

bin=${1:?usage: no-fault-hooks.sh BINARY}
[ -f "$bin" ] || { echo "no-fault-hooks: $bin: no such file" >&2; exit 2; }

found=0
for needle in 'fault injection:' 'FERRY_CONSOLE_PANIC_DRILL' 'inject_panic'; do
  # grep -a reads the binary as text: string literals and symbol names both show up.
  count=$(grep -a -c -- "$needle" "$bin" || true)
  printf '%-28s %s\n' "$needle" "$count"
  [ "$count" -eq 0 ] || found=1
done
if command -v nm >/dev/null 2>&1; then
  symbols=$(nm -C "$bin" 2>/dev/null | grep -c -E 'inject_panic|PanicOnNextBatch' || true)
  printf '%-28s %s\n' 'nm: fault symbols' "$symbols"
  [ "$symbols" -eq 0 ] || found=1
fi
if [ "$found" -ne 0 ]; then
  echo "no-fault-hooks: $bin carries fault-injection hooks (built with --features fault-injection?)" >&2
  exit 1
fi
echo "no-fault-hooks: $bin is clean"
