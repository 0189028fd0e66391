"""Copy-staging: same paths as the mount, without FUSE."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fusion.errors import ObjectNotFound, StageError
from fusion.s3_store import S3ObjectStore
from fusion.stage import fusion_path, stage_in, stage_out, url_for

from .conftest import store_config


def test_path_mapping_round_trips(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fusion_path("s3://b/k/x.txt", root="/fusion") == "/fusion/s3/b/k/x.txt"
    assert fusion_path("s3://b", root="/fusion") == "/fusion/s3/b"
    assert url_for("/fusion/s3/b/k/x.txt", root="/fusion") == "s3://b/k/x.txt"
    assert url_for("/fusion/s3/b/dir/", root="/fusion") == "s3://b/dir/"
    monkeypatch.setenv("FUSION_ROOT", "/mnt/f")
    assert fusion_path("s3://b/k") == "/mnt/f/s3/b/k"
    for bad in ["gs://b/k", "s3:///k", "b/k", "s3://b/../k"]:
        with pytest.raises(StageError):
            fusion_path(bad)
    with pytest.raises(StageError):
        url_for("/elsewhere/b/k", root="/fusion")


@pytest.mark.s3
def test_stage_in_and_out_with_the_same_paths(moto_endpoint: str, tmp_path: Path) -> None:
    store = S3ObjectStore(store_config(moto_endpoint))
    bucket = f"st-{uuid.uuid4().hex[:10]}"
    store.ensure_bucket(bucket)
    store.put(bucket, "in/a.txt", b"A")
    store.put(bucket, "in/sub/b.txt", b"B")
    store.put(bucket, "single.bin", b"S" * 1000)
    root = str(tmp_path / "fusion")
    done = stage_in(store, [f"s3://{bucket}/in/", f"s3://{bucket}/single.bin"], root=root)
    assert {Path(f.path).read_bytes() for f in done} == {b"A", b"B", b"S" * 1000}
    assert Path(fusion_path(f"s3://{bucket}/in/sub/b.txt", root)).read_bytes() == b"B"
    # A task writes outputs at Fusion paths; stage_out uploads them to the same URLs.
    out_dir = Path(fusion_path(f"s3://{bucket}/out/", root))
    (out_dir / "deep").mkdir(parents=True)
    (out_dir / "deep" / "r.txt").write_text("result")
    single = Path(fusion_path(f"s3://{bucket}/report.txt", root))
    single.write_text("report")
    stage_out(store, [str(out_dir) + "/", str(single)], root=root)
    assert store.get(bucket, "out/deep/r.txt") == b"result"
    assert store.get(bucket, "report.txt") == b"report"
    with pytest.raises(ObjectNotFound):
        stage_in(store, [f"s3://{bucket}/missing"], root=root)


@pytest.mark.s3
def test_cli_stage(moto_endpoint: str, tmp_path: Path) -> None:
    store = S3ObjectStore(store_config(moto_endpoint))
    bucket = f"cl-{uuid.uuid4().hex[:10]}"
    store.ensure_bucket(bucket)
    store.put(bucket, "x.txt", b"from s3")
    env = dict(
        os.environ,
        AWS_ENDPOINT_URL=moto_endpoint,
        AWS_ACCESS_KEY_ID="k",
        AWS_SECRET_ACCESS_KEY="s",
        AWS_REGION="us-east-1",
    )
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "fusion.cli", "stage"]
    run = subprocess.run(
        [*cmd, "in", f"s3://{bucket}/x.txt", "--root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (root / "s3" / bucket / "x.txt").read_bytes() == b"from s3"
    (root / "s3" / bucket / "y.txt").write_text("to s3")
    run = subprocess.run(
        [*cmd, "out", str(root / "s3" / bucket / "y.txt"), "--root", str(root)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert store.get(bucket, "y.txt") == b"to s3"
    bad = subprocess.run(
        [*cmd, "in", "gs://nope/x"], env=env, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 1 and "not an s3:// URL" in bad.stderr
