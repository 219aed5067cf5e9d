"""Load for bench/gateway.sh --approval: calls that are held for approval and released.

Each of N workers repeats one operation for S seconds on its own keep-alive connections and
records how long each took. Operations:

  plain URL              one POST of a small JSON (the direct call, or a function through
                         callproof without approval): the baseline of the same run;
  approval URL           the approval path as an agent and an approver drive it: the agent's
                         POST is held (202 with the call id), an approver approves it
                         (POST /v1/approvals/{id}), the agent waits for the result
                         (GET /v1/calls/{id} with Prefer: wait) and gets the function's answer.

The approver approves as soon as the call is held, so the figures are what callproof adds
around a human decision, not the decision. Prints one JSON line: the count, operations per
second and p50/p99 in microseconds of the whole operation and, for `approval`, of each step.
Standard library only, so that it runs wherever python3 does.
"""

import http.client
import json
import sys
import threading
import time
import urllib.parse

BODY = json.dumps({"customer_id": 42, "amount": 5}).encode()


class Connection:
    """One keep-alive connection that says which call failed and how."""

    def __init__(self, url, token):
        parsed = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
        self.token = token

    def request(self, method, path, body=None, headers=None, expect=200):
        headers = dict(headers or {})
        if self.token:
            headers["authorization"] = "Bearer " + self.token
        if body is not None:
            headers["content-type"] = "application/json"
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        data = response.read()
        if response.status != expect:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
        return data


def plain(url, caller_token, _approver_token):
    path = urllib.parse.urlsplit(url).path
    connection = Connection(url, caller_token)

    def operation():
        connection.request("POST", path, BODY)
        return {}

    return operation


def approval(url, caller_token, approver_token):
    parsed = urllib.parse.urlsplit(url)
    caller = Connection(url, caller_token)
    approver = Connection(url, approver_token)

    def operation():
        started = time.perf_counter()
        held = json.loads(caller.request("POST", parsed.path, BODY, expect=202))
        call_id = held["call_id"]
        is_held = time.perf_counter()
        approver.request(
            "POST", f"/v1/approvals/{call_id}", json.dumps({"decision": "approve"}).encode()
        )
        decided = time.perf_counter()
        status = json.loads(
            caller.request("GET", f"/v1/calls/{call_id}", headers={"prefer": "wait=30"})
        )
        if status.get("status") != "completed" or "result" not in status:
            raise RuntimeError(f"call {call_id} not completed: {status}")
        released = time.perf_counter()
        return {
            "hold": is_held - started,
            "decide": decided - is_held,
            "release": released - decided,
        }

    return operation


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def main():
    kind, url, caller_token, approver_token, workers, seconds = sys.argv[1:7]
    make = {"plain": plain, "approval": approval}[kind]
    deadline = time.perf_counter() + float(seconds)
    samples, failures, lock = [], [], threading.Lock()

    def worker():
        operation = make(url, caller_token, approver_token)
        mine = []
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                steps = operation()
                mine.append((time.perf_counter() - started, steps))
        except Exception as error:  # reported below: a failed call fails the run
            with lock:
                failures.append(str(error))
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(int(workers))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        sys.exit(f"{kind} at {workers} workers: {len(failures)} failed, first: {failures[0]}")
    result = {
        "count": len(samples),
        "rps": len(samples) / elapsed,
        "p50": percentile([total for total, _ in samples], 0.50) * 1e6,
        "p99": percentile([total for total, _ in samples], 0.99) * 1e6,
    }
    for step in ("hold", "decide", "release"):
        values = [steps[step] for _, steps in samples if step in steps]
        if values:
            result[f"{step}_p50"] = percentile(values, 0.50) * 1e6
            result[f"{step}_p99"] = percentile(values, 0.99) * 1e6
    print(json.dumps(result))


if __name__ == "__main__":
    main()
