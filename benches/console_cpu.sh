#!/usr/bin/env bash
# The console's own CPU cost (docs/performance.md, "The console"): ferry serve alone, a remote
# console attached to it, and the in-process console, each idle and at 1,000 prompts/s, as CPU
# time from /proc/PID/stat (utime + stime) over 30 s. Needs tmux, curl and python3; takes ~6 min.
#
#   cargo build --release && bash benches/console_cpu.sh [PORT]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=$(pwd)/target/release/ferry
port=${1:-18931}
work=$(mktemp -d)
sock="ferry-cpu-$$"
trap 'tmux -L "$sock" kill-server 2>/dev/null || true; rm -rf "$work"' EXIT
sed -e "s|bind = \"127.0.0.1:8000\"|bind = \"127.0.0.1:$port\"|" -e "s|path = \"data/ferry.db\"|path = \"$work/data/ferry.db\"|" \
  -e "s|^dir = \"logs\"|dir = \"$work/logs\"|" config.toml >"$work/config.toml"

cpu() { # PID SECONDS
  local a b
  a=$(awk '{print $14+$15}' "/proc/$1/stat"); sleep "$2"; b=$(awk '{print $14+$15}' "/proc/$1/stat")
  awk -v a="$a" -v b="$b" -v hz="$(getconf CLK_TCK)" -v s="$2" 'BEGIN{printf "%.2f%% of a core (%d ticks in %ds)\n", (b-a)/hz/s*100, b-a, s}'
}
# The shipped bulk lane takes 10 per 100 ms; this lets it take 1,000/s.
setup() {
  curl -sf "localhost:$port/api/v1/config/batch-size" -H 'content-type: application/json' -d '{"size": 200}' >/dev/null
  curl -sf "localhost:$port/api/v1/config/batch-delay" -H 'content-type: application/json' -d '{"delay_ms": 10}' >/dev/null
}
load() { python3 benches/console_load.py 127.0.0.1 "$port" 1000 40 >"$work/$1.load" & }
in_tmux() { # SESSION COMMAND -> PID of ferry in the pane
  tmux -L "$sock" new-session -d -s "$1" -x 200 -y 50 "$2; sleep 600"
  sleep 3
  pgrep -P "$(tmux -L "$sock" display -p -t "$1" '#{pane_pid}')" ferry
}

"$bin" serve --config "$work/config.toml" >"$work/serve.out" 2>&1 &
serve=$!
sleep 2; setup; sleep 2
echo "serve, idle:                 $(cpu $serve 30)"
load serve; sleep 5
echo "serve, 1,000/s:              $(cpu $serve 30)"; sleep 8; cat "$work/serve.load"
remote=$(in_tmux r "$bin console --connect http://127.0.0.1:$port")
echo "remote console, idle:        $(cpu "$remote" 30)"
load remote; sleep 5
cpu $serve 30 >"$work/serve_with_remote" &
echo "remote console, 1,000/s:     $(cpu "$remote" 30)"; sleep 1
echo "serve with it, 1,000/s:      $(cat "$work/serve_with_remote")"; sleep 8; cat "$work/remote.load"
tmux -L "$sock" send-keys -t r q; sleep 1
kill -TERM $serve; wait $serve || true
rm -rf "$work/logs" "$work/data"
console=$(in_tmux c "$bin console --config $work/config.toml")
setup; sleep 2
echo "in-process console, idle:    $(cpu "$console" 30)"
load console; sleep 5
echo "in-process console, 1,000/s: $(cpu "$console" 30)"; sleep 8; cat "$work/console.load"
tmux -L "$sock" send-keys -t c q; sleep 2
