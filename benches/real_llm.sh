#!/usr/bin/env bash
# Batching on a real model: answers/s, accuracy and upstream calls per setting.
#
# First start an OpenAI-compatible server on 127.0.0.1 serving Qwen2.5-Coder-0.5B-Instruct
# (Q4_K_M GGUF) under the model name "qwen2.5-coder-0.5b-instruct", e.g.
#   python -m llama_cpp.server --model M.gguf --model_alias qwen2.5-coder-0.5b-instruct --port 18231
#                                                          # one call at a time (llama-cpp-python), or
#   llama-server -m M.gguf -a qwen2.5-coder-0.5b-instruct -np 4 --port 18232   # llama.cpp, 4 slots
# then
#   benches/real_llm.sh http://127.0.0.1:18231/v1 [ROUNDS]
#
# For each setting: 40 short questions with known answers (capitals, small sums, opposites),
# temperature 0, max_tokens 16 — answers/s, the ratio to a sequential client, accuracy (the
# expected word in the answer), and the upstream calls made. Settings: a direct client (Python,
# threads) at concurrency 1, 2, 4, 8; `ferry run` through a fanout lane at concurrency 1, 2, 4, 8
# and "auto"; through a combined lane of 4 and of 8 (concurrency 4, with fidelity sampling off).
# Rounds are interleaved (every setting once, then again) and the median of ROUNDS (default 3)
# is printed. FERRY_BENCH_ONLY (a regular expression) picks settings by name,
# FERRY_BENCH_REPEAT asks the questions that many times over, FERRY_BENCH_LOGS=DIR keeps each
# ferry run's log. ferry is the debug build unless FERRY points elsewhere (the work is the model's,
# not ferry's). STRUCTURED=json_schema for llama-server (default json_object_schema, for
# llama-cpp-python). Needs python3 (standard library only).
set -euo pipefail
url=${1:?usage: benches/real_llm.sh BASE_URL [ROUNDS]}
rounds=${2:-3}
root=$(cd "$(dirname "$0")/.." && pwd)
ferry=${FERRY:-$root/target/debug/ferry}
[ -x "$ferry" ] || (cd "$root" && cargo build --bin ferry)
exec python3 - "$url" "$rounds" "$ferry" "${STRUCTURED:-json_object_schema}" <<'PY'
import concurrent.futures, json, os, re, statistics, subprocess, sys, tempfile, time, urllib.request

url, rounds, ferry, structured = sys.argv[1].rstrip("/"), int(sys.argv[2]), sys.argv[3], sys.argv[4]
MODEL = "qwen2.5-coder-0.5b-instruct"
QA = [
    ("What is the capital of France? One word.", "paris"), ("What is the capital of Italy? One word.", "rome"),
    ("What is the capital of Spain? One word.", "madrid"), ("What is the capital of Germany? One word.", "berlin"),
    ("What is the capital of Japan? One word.", "tokyo"), ("What is the capital of Egypt? One word.", "cairo"),
    ("What is the capital of Russia? One word.", "moscow"), ("What is the capital of Greece? One word.", "athens"),
    ("What is the capital of Norway? One word.", "oslo"), ("What is the capital of Poland? One word.", "warsaw"),
    ("What is the capital of Portugal? One word.", "lisbon"), ("What is the capital of Austria? One word.", "vienna"),
    ("What is the capital of Ireland? One word.", "dublin"), ("What is the capital of China? One word.", "beijing"),
    ("What is the capital of England? One word.", "london"), ("What is the capital of Sweden? One word.", "stockholm"),
    ("What is 2 + 2? Answer with a number.", "4"), ("What is 3 + 4? Answer with a number.", "7"),
    ("What is 5 + 5? Answer with a number.", "10"), ("What is 9 - 3? Answer with a number.", "6"),
    ("What is 6 + 2? Answer with a number.", "8"), ("What is 10 - 7? Answer with a number.", "3"),
    ("What is 4 + 5? Answer with a number.", "9"), ("What is 7 - 2? Answer with a number.", "5"),
    ("What is 1 + 1? Answer with a number.", "2"), ("What is 8 + 3? Answer with a number.", "11"),
    ("What is 6 + 6? Answer with a number.", "12"), ("What is 20 - 5? Answer with a number.", "15"),
    ("What is the opposite of hot? One word.", "cold"), ("What is the opposite of up? One word.", "down"),
    ("What is the opposite of big? One word.", "small"), ("What is the opposite of day? One word.", "night"),
    ("What is the opposite of fast? One word.", "slow"), ("What is the opposite of open? One word.", "close"),
    ("What is the opposite of light? One word.", "dark"), ("What is the opposite of yes? One word.", "no"),
    ("What is the opposite of left? One word.", "right"), ("What is the opposite of old? One word.", "new|young"),
    ("What is the opposite of happy? One word.", "sad"), ("What is the opposite of wet? One word.", "dry"),
]

# FERRY_BENCH_REPEAT: ask the questions this many times over (longer runs, steadier rates).
QA = QA * int(os.environ.get("FERRY_BENCH_REPEAT", "1"))

def right(answer, expected):
    words = re.findall(r"[a-z0-9]+", answer.lower())
    return any(w in words for w in expected.split("|"))

def direct(concurrency):
    def ask(q):
        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": q}],
                           "temperature": 0, "max_tokens": 16}).encode()
        req = urllib.request.Request(url + "/chat/completions", body, {"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.load(r)["choices"][0]["message"]["content"] or ""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        answers = list(pool.map(ask, [q for q, _ in QA]))
    return time.monotonic() - start, answers, len(QA)

def via_ferry(mode, concurrency, batch, lane_extra="", with_log=False):
    with tempfile.TemporaryDirectory() as d:
        conc = '"auto"' if concurrency == "auto" else concurrency
        open(f"{d}/c.toml", "w").write(f"""
[storage]
path = "{d}/ferry.db"
[logging]
dir = "{d}/logs"
level = "info,ferry::engine::client=debug"
[lanes.bench]
rank = 1
window_ms = {0 if mode == "fanout" else 50}
max_batch = {batch}
delay_ms = 0
mode = "{mode}"
{lane_extra}
[[upstreams]]
name = "llm"
provider = "openai"
base_url = "{url}"
models = ["{MODEL}"]
concurrency = {conc}
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
        log = "".join(open(os.path.join(f"{d}/logs", n)).read() for n in os.listdir(f"{d}/logs"))
        calls = log.count("event=llm_call")
        if os.environ.get("FERRY_BENCH_LOGS"):
            keep = os.environ["FERRY_BENCH_LOGS"]
            os.makedirs(keep, exist_ok=True)
            name = f"{mode}-{concurrency}-{batch}-{time.strftime('%H%M%S')}.log"
            open(os.path.join(keep, name), "w").write(log)
        answers = [out.get(f"q{i}", "") for i in range(len(QA))]
        return (took, answers, calls, log) if with_log else (took, answers, calls)

def accuracy_of(answers):
    return sum(right(a, e) for a, (_, e) in zip(answers, QA)) / len(QA)

if os.environ.get("FERRY_BENCH_FIDELITY"):
    # 200 questions (these 40 and 160 small sums and differences), once through a fanout lane and
    # once through a combined lane of 8 that samples and may switch itself to fanout.
    QA = QA[:40]
    for i in range(160):
        a, b = 3 + (i * 7) % 40, 1 + (i * 11) % 19
        if i % 2:
            QA.append((f"What is {a} + {b}? Answer with a number.", str(a + b)))
        else:
            a, b = max(a, b), min(a, b)
            QA.append((f"What is {a} - {b}? Answer with a number.", str(a - b)))
    conc = os.environ.get("FERRY_BENCH_CONCURRENCY", "4")
    took, answers, calls = via_ferry("fanout", conc, 200)
    fanout = accuracy_of(answers)
    print(f"fanout:   accuracy {fanout:.3f}, {len(QA) / took:.2f} answers/s, {calls} calls", flush=True)
    sampling = 'verify_share = 0.2\nmin_fidelity = 0.8\non_low_fidelity = "fanout"'
    took, answers, calls, log = via_ferry("combined", conc, 8, sampling, with_log=True)
    combined = accuracy_of(answers)
    print(f"combined: accuracy {combined:.3f}, {len(QA) / took:.2f} answers/s, {calls} calls")
    samples = re.findall(r"event=fidelity_sample.*?agreed=(\w+)", log)
    switch = [l for l in log.splitlines() if "event=low_fidelity" in l]
    resent = sum(int(n) for n in re.findall(r"event=combined_split_failed.*?resent=(\d+)", log))
    print(f"  fidelity samples {len(samples)}, agreed {sum(s == 'true' for s in samples)}")
    print(f"  switched to fanout: {switch[0] if switch else 'no'}")
    print(f"  combined calls with unanswered items: {log.count('event=combined_split_failed')}, "
          f"items re-sent alone: {resent}")
    print(f"  accuracy gap to fanout: {100 * (fanout - combined):.1f} points")
    sys.exit(0)

settings = [(f"direct client, concurrency {c}", lambda c=c: direct(c)) for c in (1, 2, 4, 8)]
settings += [(f"ferry fanout, concurrency {c}", lambda c=c: via_ferry("fanout", c, 40)) for c in (1, 2, 4, 8, "auto")]
settings += [(f"ferry combined, batches of {b} (concurrency 4)", lambda b=b: via_ferry("combined", 4, b)) for b in (4, 8)]
# FERRY_BENCH_ONLY: a regular expression; only settings whose name matches it run.
only = os.environ.get("FERRY_BENCH_ONLY")
settings = [(n, r) for n, r in settings if not only or re.search(only, n)]
results = {name: [] for name, _ in settings}
for r in range(rounds):
    for name, run in settings:
        took, answers, calls = run()
        accuracy = accuracy_of(answers)
        results[name].append((len(QA) / took, accuracy, calls))
        print(f"round {r + 1}: {name}: {len(QA) / took:.2f} answers/s, accuracy {accuracy:.2f}, {calls} calls",
              file=sys.stderr, flush=True)
first = next(iter(results))
base = statistics.median(x[0] for x in results[first])
print(f"\n{len(QA)} questions, temperature 0, max_tokens 16, median of {rounds} interleaved rounds, {url}\n")
print(f"| how | answers/s | vs {first} | accuracy | upstream calls |")
print("| --- | --- | --- | --- | --- |")
for name, _ in settings:
    rate = statistics.median(x[0] for x in results[name])
    acc = statistics.median(x[1] for x in results[name])
    calls = statistics.median(x[2] for x in results[name])
    print(f"| {name} | {rate:.2f} | {rate / base:.2f}× | {acc:.2f} | {calls:g} |")
PY
