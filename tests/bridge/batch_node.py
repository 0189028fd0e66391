"""A FAKE compute node for moto's container-less Batch, and a FAKE host termination.

moto's container-less mode marks every job SUCCEEDED at submission and runs nothing.
:class:`FakeNode` plays the compute node: it finds the jobs the broker submitted (with
its own client: ``list_jobs``/``describe_jobs``), runs each job's command *as Batch
recorded it* with the job's recorded environment (array children get
``AWS_BATCH_JOB_ARRAY_INDEX``), on this machine.  So that the broker sees the node's
truth, a hook on the *broker's* Batch client rewrites the answers of ``describe_jobs``:
a job the node has not finished is ``RUNNING``; a finished one ``SUCCEEDED`` or
``FAILED`` by its exit code; a job picked for :meth:`FakeNode.terminate_host` is
``FAILED`` with Batch's words for a reclaimed host (a fault moto cannot produce).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

HOST_TERMINATED = "Host EC2 (instance i-0fakefakefake0001) terminated."


class FakeNode:
    def __init__(self, batch: Any, queue: str, parallel: int = 6) -> None:
        self.batch = batch
        self.queue = queue
        self.lock = threading.Lock()
        self.finished: dict[str, int] = {}
        self.started: set[str] = set()
        self.doomed: set[str] = set()  # job names whose hosts get "terminated"
        self.terminated: set[str] = set()
        self.seen_arrays: list[dict[str, Any]] = []
        self.pool = ThreadPoolExecutor(parallel)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FakeNode:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def terminate_host(self, job_name_prefix: str) -> None:
        """The first job whose name starts so loses its host before it runs."""
        self.doomed.add(job_name_prefix)

    # -- the broker's view --------------------------------------------------------

    def attach(self, client: Any) -> None:
        client.meta.events.register("after-call.batch.DescribeJobs", self._rewrite)

    def _rewrite(self, parsed: dict[str, Any], **_: Any) -> None:
        with self.lock:
            for job in parsed.get("jobs", []):
                job_id = job["jobId"]
                if job_id in self.terminated:
                    job["status"], job["statusReason"] = "FAILED", HOST_TERMINATED
                elif job_id in self.finished:
                    job["status"] = "SUCCEEDED" if self.finished[job_id] == 0 else "FAILED"
                    job.setdefault("container", {})["exitCode"] = self.finished[job_id]
                elif "arrayProperties" in job and "index" not in job["arrayProperties"]:
                    continue  # an array parent: the broker asks about children
                else:
                    job["status"] = "RUNNING"

    # -- the node -----------------------------------------------------------------

    def _watch(self) -> None:
        while not self.stopping.is_set():
            try:
                self._poll()
            except Exception as err:  # keep watching; the test's deadline decides
                print(f"fake node: {err}")
            time.sleep(0.2)

    def _poll(self) -> None:
        summaries = self.batch.list_jobs(
            jobQueue=self.queue, filters=[{"name": "JOB_NAME", "values": ["bridge*"]}]
        )["jobSummaryList"]
        new = [
            s["jobId"]
            for s in summaries
            if ":" not in s["jobId"] and s["jobId"] not in self.started
        ]
        for start in range(0, len(new), 100):
            for job in self.batch.describe_jobs(jobs=new[start : start + 100])["jobs"]:
                self.started.add(job["jobId"])
                self._start(job)

    def _start(self, job: dict[str, Any]) -> None:
        container = job["container"]
        env = {e["name"]: e["value"] for e in container.get("environment", [])}
        size = (job.get("arrayProperties") or {}).get("size")
        if size:
            self.seen_arrays.append(job)
            for i in range(size):
                child = f"{job['jobId']}:{i}"
                self.pool.submit(
                    self._run,
                    child,
                    container["command"],
                    {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(i), "AWS_BATCH_JOB_ID": child},
                )
            return
        doomed = next((p for p in self.doomed if job["jobName"].startswith(p)), None)
        if doomed is not None:
            self.doomed.discard(doomed)
            with self.lock:
                self.terminated.add(job["jobId"])
            return
        self.pool.submit(
            self._run, job["jobId"], container["command"], {**env, "AWS_BATCH_JOB_ID": job["jobId"]}
        )

    def _run(self, job_id: str, command: list[str], env: dict[str, str]) -> None:
        full = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}
        try:
            result = subprocess.run(
                command, env=full, capture_output=True, text=True, timeout=600, check=False
            )
            code, err = result.returncode, result.stderr
        except (OSError, subprocess.SubprocessError) as error:  # the job fails, visibly
            code, err = 125, str(error)
        if code:
            print(f"fake node: {job_id} exit {code}: {err[-2000:]}")
        with self.lock:
            self.finished[job_id] = code
