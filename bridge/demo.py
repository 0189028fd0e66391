"""A three-step demo workflow on the embedded defaults.

``generate`` writes numbers, ``square`` reads them and squares each, ``summarise``
adds the squares up.  Each step reads what the previous one wrote, through TES
inputs and outputs, so the demo exercises staging as well as running.  Results go
to ``<data-dir>/demo-results/<run>/`` -- or to the work bucket when object storage
is configured.
"""

from __future__ import annotations

import time
from typing import Any

from bridge.client import BridgeClient, TaskFailed

IMAGE = "debian:bookworm-slim"


def _step(
    name: str, run: str, command: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "name": f"demo-{name}",
        "tags": {"workflow": f"demo-{run}"},
        "inputs": inputs,
        "outputs": outputs,
        "executors": [{"image": IMAGE, "command": ["sh", "-c", command]}],
        "resources": {"cpu_cores": 1},
    }


def run_demo(client: BridgeClient, results_base: str, out: Any) -> bool:
    run = time.strftime("%Y%m%d-%H%M%S")
    base = f"{results_base.rstrip('/')}/{run}"
    numbers, squares, total = f"{base}/numbers.txt", f"{base}/squares.txt", f"{base}/sum.txt"
    steps = [
        _step(
            "generate",
            run,
            "seq 1 10 > /data/out/numbers.txt",
            [],
            [{"path": "/data/out/numbers.txt", "url": numbers}],
        ),
        _step(
            "square",
            run,
            "awk '{print $1*$1}' /data/in/numbers.txt > /data/out/squares.txt",
            [{"path": "/data/in/numbers.txt", "url": numbers}],
            [{"path": "/data/out/squares.txt", "url": squares}],
        ),
        _step(
            "summarise",
            run,
            "awk '{s+=$1} END {print s}' /data/in/squares.txt | tee /data/out/sum.txt",
            [{"path": "/data/in/squares.txt", "url": squares}],
            [{"path": "/data/out/sum.txt", "url": total}],
        ),
    ]
    for step in steps:
        future = client.submit(step)
        print(f"{step['name']:<16} submitted as {future.id}", file=out)
        try:
            task = future.result(timeout=300)
        except TaskFailed as err:
            print(f"{step['name']} ended {err.task['state']}:", file=out)
            for entry in err.task.get("logs", []):
                for line in entry.get("system_logs", []):
                    print(f"  {line}", file=out)
                for ex in entry.get("logs", []):
                    print(f"  exit {ex.get('exit_code')}: {ex.get('stderr', '').strip()}", file=out)
            return False
        meta = task["logs"][-1].get("metadata", {})
        print(
            f"{'':<16} COMPLETE; placed on {meta.get('placement_reason') or meta.get('target')}",
            file=out,
        )
    final = client.get(future.id, view="FULL")
    answer = final["logs"][-1]["logs"][0]["stdout"].strip()
    print(f"\nsum of squares of 1..10 = {answer} (expected 385)", file=out)
    print(f"results: {base}/", file=out)
    print(f"workflow tag: workflow=demo-{run}  (bridge list --tag workflow=demo-{run})", file=out)
    return answer == "385"
