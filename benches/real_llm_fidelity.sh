#!/usr/bin/env bash
# Fidelity sampling on a real model: a combined lane that notices it answers worse than fanout
# and switches itself to fanout.
#
#   ../shared/tools/real-llm-upstream 18231 &
#   benches/real_llm_fidelity.sh http://127.0.0.1:18231/v1 [CONCURRENCY]
#
# 200 short questions with known answers (the 40 of benches/real_llm.sh and 160 small sums and
# differences), temperature 0, max_tokens 16, through `ferry run`: once on a fanout lane, once on
# a combined lane of 8 with `verify_share = 0.2`, `min_fidelity = 0.8` and
# `on_low_fidelity = "fanout"`. Prints each run's accuracy and answers/s, and for the combined
# run: fidelity samples and agreements, whether and when the lane switched (`event=low_fidelity`),
# combined calls whose reply left items unanswered and the items re-sent alone. ferry is the debug
# build unless FERRY points elsewhere. STRUCTURED as in benches/real_llm.sh.
set -euo pipefail
url=${1:?usage: benches/real_llm_fidelity.sh BASE_URL [CONCURRENCY]}
concurrency=${2:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
ferry=${FERRY:-$root/target/debug/ferry}
[ -x "$ferry" ] || (cd "$root" && cargo build --bin ferry)
exec python3 - "$url" "$concurrency" "$ferry" "${STRUCTURED:-json_object_schema}" "$root/benches/real_llm.sh" <<'PY'
import json, os, re, subprocess, sys, tempfile, time

url, concurrency, ferry, structured, sibling = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
MODEL = "qwen2.5-coder-0.5b-instruct"
# The 40 questions of the throughput bench, read from its source so both stay one list.
source = open(sibling).read()
start = source.index("QA = [") + 5
QA = eval(source[start : source.index("\n]\n", start) + 2])
for i in range(160):
    a, b = 3 + (i * 7) % 40, 1 + (i * 11) % 19
    if i % 2:
        QA.append((f"What is {a} + {b}? Answer with a number.", str(a + b)))
    else:
        a, b = max(a, b), min(a, b)
        QA.append((f"What is {a} - {b}? Answer with a number.", str(a - b)))
assert len(QA) == 200

def right(answer, expected):
    words = re.findall(r"[a-z0-9]+", answer.lower())
    return any(w in words for w in expected.split("|"))

def run(mode):
    with tempfile.TemporaryDirectory() as d:
        fidelity = 'verify_share = 0.2\nmin_fidelity = 0.8\non_low_fidelity = "fanout"' if mode == "combined" else ""
        open(f"{d}/c.toml", "w").write(f"""
[storage]
path = "{d}/ferry.db"
[logging]
dir = "{d}/logs"
level = "info,ferry::engine::client=debug"
[lanes.bench]
rank = 1
window_ms = {0 if mode == "fanout" else 50}
max_batch = {8 if mode == "combined" else 200}
delay_ms = 0
mode = "{mode}"
{fidelity}
[[upstreams]]
name = "llm"
provider = "openai"
base_url = "{url}"
models = ["{MODEL}"]
concurrency = {concurrency}
structured_output = "{structured}"
timeout_ms = 600000
""")
        with open(f"{d}/in.jsonl", "w") as f:
            for i, (q, _) in enumerate(QA):
                f.write(json.dumps({"custom_id": f"q{i}", "prompt": q}) + "\n")
        start = time.monotonic()
        subprocess.run([ferry, "run", f"{d}/in.jsonl", "-o", f"{d}/out.jsonl", "--lane", "bench",
                        "--temperature", "0", "--max-tokens", "16", "--config", f"{d}/c.toml"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        took = time.monotonic() - start
        out = {}
        for line in open(f"{d}/out.jsonl"):
            row = json.loads(line)
            body = (row.get("response") or {}).get("body") or {}
            out[row["custom_id"]] = (body.get("choices") or [{}])[0].get("message", {}).get("content") or ""
        log = "".join(open(os.path.join(f"{d}/logs", n)).read() for n in sorted(os.listdir(f"{d}/logs")))
        accuracy = sum(right(out.get(f"q{i}", ""), e) for i, (_, e) in enumerate(QA)) / len(QA)
        samples = re.findall(r"event=fidelity_sample.*?agreed=(\w+)", log)
        switch = [l for l in log.splitlines() if "event=low_fidelity" in l]
        resent = sum(int(n) for n in re.findall(r"event=combined_split_failed.*?resent=(\d+)", log))
        return {
            "accuracy": accuracy, "rate": len(QA) / took, "calls": log.count("event=llm_call"),
            "samples": len(samples), "agreed": sum(s == "true" for s in samples),
            "switched": switch[0] if switch else None,
            "split_failed": log.count("event=combined_split_failed"), "resent": resent,
        }

fanout = run("fanout")
print(f"fanout:   accuracy {fanout['accuracy']:.3f}, {fanout['rate']:.2f} answers/s, {fanout['calls']} calls", flush=True)
combined = run("combined")
print(f"combined: accuracy {combined['accuracy']:.3f}, {combined['rate']:.2f} answers/s, {combined['calls']} calls", flush=True)
print(f"  fidelity samples {combined['samples']}, agreed {combined['agreed']}")
print(f"  switched to fanout: {combined['switched'] or 'no'}")
print(f"  combined calls with unanswered items: {combined['split_failed']}, items re-sent alone: {combined['resent']}")
print(f"  accuracy gap to fanout: {100 * (fanout['accuracy'] - combined['accuracy']):.1f} points")
PY
