"""The mount API the node agent calls, where it does not need a mount to be checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fusion.errors import MountError
from fusion.mount import MountOptions, fuse_available, is_mounted, mount
from fusion.objects import StoreConfig


def test_fuse_available_gives_a_reason_when_not() -> None:
    ok, reason = fuse_available()
    if os.path.exists("/dev/fuse") and os.access("/dev/fuse", os.R_OK | os.W_OK):
        assert (ok, reason) == (True, "") or "fusermount3" in reason or "pyfuse3" in reason
    else:
        assert not ok and "/dev/fuse" in reason


def test_is_mounted(tmp_path: Path) -> None:
    assert not is_mounted(tmp_path)
    assert not is_mounted(tmp_path / "missing")
    assert is_mounted("/")


def test_options_become_arguments() -> None:
    args = MountOptions(metadata_ttl=5, allow_other=True, upload_threads=4).to_args()
    assert args[args.index("--metadata-ttl") + 1] == "5"
    assert args[args.index("--upload-threads") + 1] == "4"
    assert "--allow-other" in args


def test_store_config_travels_in_the_environment_not_argv() -> None:
    cfg = StoreConfig(endpoint_url="http://h:1", access_key_id="AK", secret_access_key="SK")
    env = cfg.to_env()
    assert env["AWS_ENDPOINT_URL"] == "http://h:1"
    assert env["AWS_SECRET_ACCESS_KEY"] == "SK"
    assert StoreConfig.from_env(env).secret_access_key == "SK"


@pytest.mark.fuse
def test_a_failing_mount_reports_the_child_log(tmp_path: Path, require_fuse: None) -> None:
    cfg = StoreConfig(endpoint_url="http://127.0.0.1:9", access_key_id="a", secret_access_key="b")
    target = tmp_path / "file-not-dir"
    target.write_text("x")
    with pytest.raises(MountError):
        mount(target, cfg, tmp_path / "cache", 1 << 20, timeout=20)
    bad = MountOptions(extra_args=("--no-such-flag",))
    with pytest.raises(MountError) as err:
        mount(tmp_path / "mnt", cfg, tmp_path / "cache", 1 << 20, options=bad, timeout=20)
    assert "unrecognized arguments: --no-such-flag" in str(err.value)
    assert not is_mounted(tmp_path / "mnt")
