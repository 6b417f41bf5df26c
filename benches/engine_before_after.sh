#!/usr/bin/env bash
# The engine bench at an older commit and at this working tree, side by side in one run.
#
#   benches/engine_before_after.sh BEFORE_COMMIT [ROUNDS]
#
# Builds `cargo bench --bench engine` at BEFORE_COMMIT (a detached git worktree in a temp dir,
# removed at the end) and in this working tree, then runs them interleaved, ROUNDS times
# (default 3): before with one owner, after with one owner, after with FERRY_BENCH_OWNERS owners
# (default 100). A commit whose bench has no owner mode ignores FERRY_BENCH_OWNERS, so only its
# one-owner figure is taken. Prints each run, then medians and ranges, and the ratio of after
# with many owners to before with one owner.
#
# Environment: FERRY_BENCH_ITEMS (default 1,000,000), FERRY_BENCH_SAMPLES (default 2,000 here:
# the latency part is not compared), FERRY_BENCH_OWNERS (default 100); CARGO_TARGET_DIR (both
# builds share it: the dependencies are built once, the two crates are kept apart by their
# paths); BEFORE_WORKTREE: an existing checkout of BEFORE_COMMIT to build instead of a temp one.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 BEFORE_COMMIT [ROUNDS]" >&2
    exit 2
fi
repo=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
before_commit=$(git -C "$repo" rev-parse --verify "$1^{commit}")
rounds=${2:-3}
owners=${FERRY_BENCH_OWNERS:-100}
export FERRY_BENCH_ITEMS=${FERRY_BENCH_ITEMS:-1000000}
export FERRY_BENCH_SAMPLES=${FERRY_BENCH_SAMPLES:-2000}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$repo/target}

tmp=$(mktemp -d)
cleanup() {
    if [[ -z ${BEFORE_WORKTREE:-} && -d $tmp/before ]]; then
        git -C "$repo" worktree remove --force "$tmp/before" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -n ${BEFORE_WORKTREE:-} ]]; then
    before_dir=$BEFORE_WORKTREE
    if [[ $(git -C "$before_dir" rev-parse HEAD) != "$before_commit" ]]; then
        echo "$before_dir is not at $before_commit" >&2
        exit 2
    fi
else
    before_dir=$tmp/before
    git -C "$repo" worktree add --detach --quiet "$before_dir" "$before_commit"
fi

# Builds the engine bench in $1 and copies its executable to $2.
build() {
    local exe
    exe=$(cd "$1" && cargo bench --bench engine --no-run --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*/deps/engine-[^"]*"' | tail -n 1 | sed 's/"executable":"//; s/"$//')
    if [[ -z $exe || ! -x $exe ]]; then
        echo "building the engine bench in $1 failed:" >&2
        (cd "$1" && cargo bench --bench engine --no-run) >&2 || true
        exit 1
    fi
    cp "$exe" "$2"
}
echo "building before ($before_commit) and after ($repo, $(git -C "$repo" rev-parse --short HEAD))" >&2
build "$before_dir" "$tmp/engine-before"
build "$repo" "$tmp/engine-after"

# Runs one bench executable with $2 owners; prints its prompts/s.
rate() {
    FERRY_BENCH_OWNERS=$2 "$1" | sed -n 's/^engine throughput.*: \([0-9]*\) prompts\/s.*/\1/p'
}
: >"$tmp/runs"
for round in $(seq 1 "$rounds"); do
    b=$(rate "$tmp/engine-before" 1)
    a1=$(rate "$tmp/engine-after" 1)
    an=$(rate "$tmp/engine-after" "$owners")
    printf 'round %d: before 1 owner %s, after 1 owner %s, after %d owners %s prompts/s\n' \
        "$round" "$b" "$a1" "$owners" "$an"
    printf 'before1 %s\nafter1 %s\nafterN %s\n' "$b" "$a1" "$an" >>"$tmp/runs"
done

# Median and range of one series.
stats() {
    awk -v key="$1" '$1 == key { print $2 }' "$tmp/runs" | sort -n | awk '
        { v[NR] = $1 }
        END {
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            printf "%d %d %d %d\n", m, v[1], v[NR], NR
        }'
}
read -r b_med b_min b_max n <<<"$(stats before1)"
read -r a1_med a1_min a1_max _ <<<"$(stats after1)"
read -r an_med an_min an_max _ <<<"$(stats afterN)"
echo
echo "engine throughput, fanout, in-process mock, zero latency, $FERRY_BENCH_ITEMS prompts, $n runs each, interleaved"
printf '| %-30s | %-18s | %-22s |\n' "build, owners" "median prompts/s" "range prompts/s"
printf '| %-30s | %-18s | %-22s |\n' "------------------------------" "------------------" "----------------------"
printf '| %-30s | %18d | %10d – %-9d |\n' "before ${before_commit:0:7}, 1 owner" "$b_med" "$b_min" "$b_max"
printf '| %-30s | %18d | %10d – %-9d |\n' "after, 1 owner" "$a1_med" "$a1_min" "$a1_max"
printf '| %-30s | %18d | %10d – %-9d |\n' "after, $owners owners" "$an_med" "$an_min" "$an_max"
awk -v a1="$a1_med" -v an="$an_med" -v b="$b_med" -v o="$owners" 'BEGIN {
    printf "after 1 owner / before 1 owner: %.1f%%\n", 100 * a1 / b
    printf "after %d owners / before 1 owner: %.1f%% (target: at least 80%%)\n", o, 100 * an / b
    printf "after %d owners / after 1 owner: %.1f%%\n", o, 100 * an / a1
}'
