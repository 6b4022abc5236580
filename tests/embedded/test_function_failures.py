"""Every function answers Lago-shaped JSON and writes one JSON line for a failure it cannot
serve, a configuration it cannot build its runtime from included; library warnings are JSON
lines with a severity too, and records from many threads never share or split a line.

Each case runs in a child process (a function's settings and runtime are built once per
process), through functions-framework's test client, so that everything written to stderr
(Flask's, werkzeug's, urllib3's) is what is checked."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from tests.support import REPO_ROOT

FUNCTIONS = ("ingest", "process", "admin", "bill", "stripe_webhook", "portal")
INTERNAL = {"status": 500, "error": "Internal Server Error", "code": "internal_error"}

_CHILD = r"""
import base64, json, sys
import functions_framework
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent

repo, name = sys.argv[1], sys.argv[2]
signature = "cloudevent" if name == "process" else "http"
client = functions_framework.create_app(name, f"{repo}/functions/{name}/main.py", signature).test_client()
answers = []
for _ in range(2):  # the runtime is not cached after a failure: the second request fails alike
    if signature == "cloudevent":
        headers, body = to_structured(CloudEvent(
            {"type": "google.cloud.pubsub.topic.v1.messagePublished", "id": "m-1",
             "source": "//pubsub.googleapis.com/projects/p/topics/events"},
            {"message": {"data": base64.b64encode(b"{}").decode(), "messageId": "m-1"}}))
        response = client.post("/", headers=headers, data=body)
    else:
        response = client.post("/api/v1/whatever", data=b"{}", headers={"Content-Type": "application/json"})
    answers.append({"status": response.status_code, "type": response.content_type, "body": response.get_json(silent=True)})
print(json.dumps(answers))
"""

CASES = [  # (function, what is wrong, its settings)
    *[(name, "gcp without a project", {"METERLINE_BACKEND": "gcp"}) for name in FUNCTIONS],
    *[(name, "a setting out of range", {"METERLINE_MAX_BODY_BYTES": "-1"}) for name in ("bill", "admin")],
    ("stripe_webhook", "no webhook secret", {"METERLINE_BACKEND": "embedded"}),
    ("portal", "no signing key on gcp", {"METERLINE_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": "p",
                                         "FIRESTORE_EMULATOR_HOST": "127.0.0.1:9", "BIGQUERY_EMULATOR_HOST": "http://127.0.0.1:9"}),
]


def _run(name: str, settings: dict[str, str], data_dir: str) -> tuple[list[dict], list[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERLINE_") and k != "GOOGLE_CLOUD_PROJECT"}
    env.update({"METERLINE_DATA_DIR": data_dir, **settings})
    done = subprocess.run([sys.executable, "-c", _CHILD, str(REPO_ROOT), name], capture_output=True, text=True,
                          env=env, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return orjson.loads(done.stdout), done.stderr.splitlines()


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[tuple[str, str], tuple[list[dict], list[str]]]:
    root = tmp_path_factory.mktemp("failures")

    def one(i_case):
        i, (name, label, settings) = i_case
        return (name, label), _run(name, settings, str(root / str(i)))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, enumerate(CASES)))


def json_lines(lines: list[str]) -> list[dict]:
    records = []
    for line in lines:
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        assert isinstance(record, dict), f"a stderr line that is not one JSON object: {line!r}"
        assert record.get("severity"), record
        records.append(record)
    return records


@pytest.mark.parametrize("name, label", [(n, label) for n, label, _ in CASES])
def test_a_runtime_that_cannot_be_built_is_a_lago_500_and_one_json_line_per_request(outcomes, name, label):
    answers, lines = outcomes[(name, label)]
    for answer in answers:
        assert answer["status"] == 500 and answer["type"].startswith("application/json"), answer
        assert answer["body"] == INTERNAL
    records = json_lines(lines)
    errors = [r for r in records if r["severity"] == "ERROR"]
    assert len(errors) == len(answers), records  # one line per failed request, nothing else
    for record in errors:
        assert record["exception_type"] == "ConfigError" and "stack_trace" in record
        assert "Traceback" not in " ".join(lines).split('"stack_trace"')[0]


_THREADS_CHILD = r"""
import logging, threading, warnings
from meterline import logs

log = logs.get("threads")
urllib3 = logging.getLogger("urllib3.connectionpool")
big = "x" * 9000  # above a pipe's atomic write (4 KiB) and a text stream's buffer (8 KiB)

def work(i):
    for j in range(50):
        logs.event(log, "record", thread=i, n=j, pad=big if j % 5 == 0 else "")
        urllib3.warning("Connection pool is full, discarding connection: %s. Connection pool size: %s", "h", 10)
    warnings.warn(f"a library's deprecation {i}", DeprecationWarning)

warnings.simplefilter("always")
threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
for t in threads: t.start()
for t in threads: t.join()
"""


def test_records_from_many_threads_and_library_warnings_are_whole_json_lines():
    done = subprocess.run([sys.executable, "-c", _THREADS_CHILD], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    records = json_lines(done.stderr.splitlines())
    ours = [r for r in records if r["logger"] == "meterline.threads"]
    assert sorted((r["thread"], r["n"]) for r in ours) == [(i, j) for i in range(16) for j in range(50)]
    pool = [r for r in records if r["logger"] == "urllib3.connectionpool"]
    assert len(pool) == 16 * 50 and {r["severity"] for r in pool} == {"WARNING"}
    deprecations = [r for r in records if r["logger"] == "py.warnings"]
    assert len(deprecations) == 16 and {r["severity"] for r in deprecations} == {"WARNING"}


def test_the_bigquery_clients_pool_holds_a_connection_per_thread(monkeypatch):
    from meterline.adapters.gcp.clients import bigquery_client
    from meterline.config import Settings

    monkeypatch.setenv("THREADS", "80")
    client = bigquery_client(Settings(backend="gcp", google_cloud_project="p", bigquery_emulator_host="http://127.0.0.1:9"))
    for prefix in ("https://", "http://"):
        assert client._http.get_adapter(prefix + "bigquery.example")._pool_maxsize == 80
