"""Against a real tracking server (PostgreSQL + S3-compatible artifacts + `mlflow server`).

Deselected by default; CI runs them with `-m server` after `.ci/services.sh`.
"""

from __future__ import annotations

import filecmp
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.servers import TrackingStack, s3_client, tracking_stack

pytestmark = pytest.mark.server

N_POINTS = 200


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingStack]:
    with tracking_stack(tmp_path_factory.mktemp("tracking-stack")) as s:
        print(f"tracking stack startup (s): {s.startup_s}")
        yield s


@pytest.fixture
def client(stack: TrackingStack, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    # Without S3 credentials or endpoint here, artifacts can only travel through the server.
    for var in ("MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return MlflowClient(stack.uri)


# Each writer creates its own child run, then waits for the go-file so that both log at
# the same time, one request per point (the concurrency is the point of the test).
WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from mlflow import MlflowClient
    uri, experiment_id, parent_id, index, n_points, ready, go = sys.argv[1:]
    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name=f"child-{index}",
                            tags={"mlflow.parentRunId": parent_id})
    print(run.info.run_id, flush=True)
    Path(ready).touch()
    while not Path(go).exists():
        time.sleep(0.01)
    for step in range(int(n_points)):
        client.log_metric(run.info.run_id, "loss", int(index) * 1000 + step * 0.5, step=step)
    client.set_terminated(run.info.run_id)
""")


def test_concurrent_writers_and_nested_runs(client: MlflowClient, stack: TrackingStack,
                                            tmp_path: Path) -> None:
    experiment_id = client.create_experiment("concurrent-writers")
    parent = client.create_run(experiment_id, run_name="parent").info.run_id
    go = tmp_path / "go"
    writers = [subprocess.Popen(
        [sys.executable, "-c", WRITER, stack.uri, experiment_id, parent, str(i),
         str(N_POINTS), str(tmp_path / f"ready-{i}"), str(go)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready-{i}").exists() for i in (1, 2)):
            dead = [w for w in writers if w.poll() is not None]
            assert not dead, [w.communicate() for w in dead]
            assert time.monotonic() < deadline, "writers did not get ready"
            time.sleep(0.05)
        go.touch()
        outputs = [w.communicate(timeout=300) for w in writers]
    finally:
        for w in writers:
            w.kill()
    assert [w.returncode for w in writers] == [0, 0], outputs
    # First line only: set_terminated prints "View run ..." links after the id.
    children = [out.splitlines()[0] for out, _ in outputs]
    client.set_terminated(parent)

    spans = []
    for i, run_id in zip((1, 2), children):
        history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
        assert [m.step for m in history] == list(range(N_POINTS))
        assert [m.value for m in history] == [i * 1000 + s * 0.5 for s in range(N_POINTS)]
        spans.append((min(m.timestamp for m in history), max(m.timestamp for m in history)))
        assert client.get_run(run_id).info.status == "FINISHED"
    # The two writers' logging overlapped in time: they really were concurrent.
    assert max(s for s, _ in spans) <= min(e for _, e in spans), spans

    found = client.search_runs([experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.run_id for r in found) == sorted(children)
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in found)
    assert len(client.search_runs([experiment_id])) == 3


def test_artifacts_round_trip_through_the_server_into_s3(client: MlflowClient,
                                                          stack: TrackingStack,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "tree" / "sub").mkdir(parents=True)
    (src / "notes.txt").write_text("energy-based models\n")
    (src / "tree" / "weights.bin").write_bytes(bytes(range(256)) * 64)
    (src / "tree" / "sub" / "empty.dat").write_bytes(b"")
    (src / "tree" / "sub" / "config.yaml").write_text("n_hidden: 16\n")

    run_id = client.create_run(client.create_experiment("artifacts")).info.run_id
    client.log_artifact(run_id, str(src / "notes.txt"))
    client.log_artifacts(run_id, str(src / "tree"), artifact_path="tree")
    run = client.get_run(run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri

    out = Path(client.download_artifacts(run_id, "", str(tmp_path / "dst")))
    files = ["notes.txt", "tree/weights.bin", "tree/sub/empty.dat", "tree/sub/config.yaml"]
    _, mismatch, errors = filecmp.cmpfiles(src, out, files, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) == \
        sorted(files)

    s3 = s3_client(stack.s3)
    listed = s3.list_objects_v2(Bucket=stack.s3["bucket"], Prefix="mlartifacts/")
    keys = {o["Key"] for o in listed.get("Contents", [])}
    stored = {k.split(f"/{run_id}/artifacts/", 1)[1]: k for k in keys
              if f"/{run_id}/artifacts/" in k}
    assert sorted(stored) == sorted(files), keys
    for rel, key in stored.items():
        body = s3.get_object(Bucket=stack.s3["bucket"], Key=key)["Body"].read()
        assert body == (src / rel).read_bytes(), rel
