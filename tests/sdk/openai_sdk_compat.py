"""The official `openai` Python SDK against ferry, unchanged: the Batch API round trip
(files.create -> batches.create -> poll -> files.content) and chat.completions.create.

Run by tests/sdk_compat.rs with FERRY_SDK_BASE_URL set to ferry's /v1 base URL. Exits non-zero
(with the reason) on any mismatch.
"""

import io
import json
import os
import sys
import time

from openai import OpenAI

LINES = 25
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def main() -> None:
    base_url = os.environ["FERRY_SDK_BASE_URL"]
    client = OpenAI(base_url=base_url, api_key=os.environ.get("FERRY_SDK_API_KEY", "unused"), max_retries=0)

    reply = client.chat.completions.create(
        model="mock", messages=[{"role": "user", "content": "Say hello to the SDK"}]
    )
    text = reply.choices[0].message.content or ""
    assert "Say hello to the SDK" in text, f"chat completion text: {text!r}"
    assert reply.object == "chat.completion", reply
    assert reply.usage is not None and reply.usage.total_tokens > 0, reply.usage
    print(f"chat.completions.create: {reply.id} {text!r}")

    requests = io.BytesIO(
        "".join(
            json.dumps(
                {
                    "custom_id": f"sdk-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}]},
                }
            )
            + "\n"
            for i in range(LINES)
        ).encode()
    )
    uploaded = client.files.create(file=("requests.jsonl", requests), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes > 0, uploaded
    print(f"files.create: {uploaded.id} ({uploaded.bytes} bytes)")

    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"from": "openai-python"},
    )
    print(f"batches.create: {batch.id} {batch.status}")
    deadline = time.monotonic() + 120
    while batch.status not in TERMINAL:
        assert time.monotonic() < deadline, f"batch still {batch.status} after 120 s"
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    print(f"batches.retrieve: {batch.status} {batch.request_counts}")
    assert batch.status == "completed", batch
    assert batch.request_counts.total == LINES and batch.request_counts.completed == LINES, batch
    assert batch.metadata == {"from": "openai-python"}, batch.metadata

    content = client.files.content(batch.output_file_id).text
    results = [json.loads(line) for line in content.splitlines() if line.strip()]
    ids = sorted(r["custom_id"] for r in results)
    assert ids == sorted(f"sdk-{i}" for i in range(LINES)), ids
    for r in results:
        assert r["response"]["status_code"] == 200, r
        body = r["response"]["body"]
        assert body["choices"][0]["message"]["content"], r
    print(f"files.content: {len(results)} result lines")

    listed = client.batches.list(limit=10)
    assert any(b.id == batch.id for b in listed.data), listed
    print("batches.list: ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"SDK compatibility FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
