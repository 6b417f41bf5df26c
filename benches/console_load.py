# Paced load for benches/console_cpu.sh: RATE prompts/s for SECONDS, 50 prompts per
# POST /api/v1/prompts, over 8 keep-alive connections.  python3 console_load.py HOST PORT RATE SECONDS
import http.client, json, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2]); rate = float(sys.argv[3]); seconds = float(sys.argv[4])
chunk, threads = 50, 8
period = chunk * threads / rate
sent = [0] * threads; ok = [0] * threads
body = json.dumps({"prompts": [f"load prompt {i}" for i in range(chunk)]})
def run(t):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    start = time.monotonic() + t * period / threads
    n = 0
    while True:
        at = start + n * period
        if at - (start - t * period / threads) > seconds: break
        d = at - time.monotonic()
        if d > 0: time.sleep(d)
        conn.request("POST", "/api/v1/prompts", body, {"content-type": "application/json"})
        r = json.loads(conn.getresponse().read())
        sent[t] += chunk
        ok[t] += sum(1 for x in r["responses"] if x["status"] == "success")
        n += 1
t0 = time.monotonic()
ts = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
el = time.monotonic() - t0
print(f"load: sent {sum(sent)} ok {sum(ok)} in {el:.1f}s = {sum(sent)/el:.0f} prompts/s")
