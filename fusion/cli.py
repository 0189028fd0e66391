"""``fusion`` command line: ``mount`` a file system, or ``stage in|out`` without FUSE.

``fusion mount MOUNTPOINT`` serves ``MOUNTPOINT/s3/<bucket>/<key>`` in the foreground
until SIGTERM/SIGINT, then unmounts cleanly. The store is reached with the usual AWS
variables and profiles (``AWS_ENDPOINT_URL``, ``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``...);
``--endpoint-url`` and ``--profile`` override them.

Environment knobs of the mount process, for diagnosis: ``FUSION_DEBUG=1`` logs at debug
level, ``FUSION_READ_AHEAD_KB`` sets the kernel read-ahead of the mount (default 4096),
``FUSION_DEFAULT_MALLOC=1`` keeps glibc's default allocator tuning.

``fusion stage in s3://b/k [more...]`` copies objects to their Fusion paths (under
``--root``, default ``$FUSION_ROOT`` or ``/fusion``), and ``fusion stage out PATH...``
uploads files from Fusion paths back to the objects they name; ``URL=PATH`` or
``PATH=URL`` pairs stage to or from other places.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from fusion.errors import FusionError
from fusion.objects import StoreConfig

__all__ = ["main", "parse_size"]

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """``"512M"`` -> 536870912; plain numbers are bytes; KiB-style suffixes accepted."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in _UNITS else ""
    number = t[:-1] if unit else t
    try:
        return int(float(number) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


def _store_config(args: argparse.Namespace) -> StoreConfig:
    base = StoreConfig.from_env()
    return StoreConfig(
        endpoint_url=args.endpoint_url or base.endpoint_url,
        region=args.region or base.region,
        access_key_id=base.access_key_id,
        secret_access_key=base.secret_access_key,
        session_token=base.session_token,
        profile=args.profile or base.profile,
        max_attempts=int(os.environ.get("FUSION_S3_MAX_ATTEMPTS") or base.max_attempts),
        max_connections=int(os.environ.get("FUSION_S3_MAX_CONNECTIONS") or base.max_connections),
    )


def _add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint-url", help="S3 endpoint (default: $AWS_ENDPOINT_URL or AWS)")
    p.add_argument("--region", help="region (default: $AWS_REGION)")
    p.add_argument("--profile", help="AWS profile (default: $AWS_PROFILE)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fusion", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mount", help="mount object storage at MOUNTPOINT (foreground)")
    m.add_argument("mountpoint")
    _add_store_args(m)
    m.add_argument("--cache-dir", default=os.path.join("/var/tmp", "fusion-cache"))
    m.add_argument("--cache-size", type=parse_size, default=parse_size("2G"))
    m.add_argument("--read-only", action="store_true")
    m.add_argument("--metadata-ttl", type=float, default=1.0, help="seconds (default 1)")
    m.add_argument(
        "--part-size",
        type=parse_size,
        default=parse_size("8M"),
        help="size of the parts a written file is uploaded in (default 8M)",
    )
    m.add_argument(
        "--read-part-size",
        type=parse_size,
        default=parse_size("16M"),
        help="largest ranged GET of a sequential read (default 16M)",
    )
    m.add_argument("--max-window", type=parse_size, default=parse_size("128M"))
    m.add_argument(
        "--random-span",
        type=parse_size,
        default=parse_size("16M"),
        help="most bytes fetched around a read at a random offset (0: only what it reads)",
    )
    m.add_argument("--fetch-threads", type=int, default=32, help="parallel GETs (all files)")
    m.add_argument("--upload-threads", type=int, default=16, help="parallel part uploads")
    m.add_argument("--bucket", action="append", default=[], help="only show these buckets")
    m.add_argument("--allow-other", action="store_true", help="let other users use the mount")
    m.add_argument("--debug", action="store_true")
    m.add_argument("--ready-file", help="write this file once the mount is serving")
    m.add_argument(
        "--stats-file", help="write what the mount did (JSON counters) here when it ends"
    )

    s = sub.add_parser("stage", help="copy between object storage and Fusion paths")
    s.add_argument("direction", choices=["in", "out"])
    s.add_argument("items", nargs="+", help="URLs (in) or paths (out), or URL=PATH pairs")
    s.add_argument("--root", default=None, help="Fusion root (default $FUSION_ROOT or /fusion)")
    _add_store_args(s)
    return parser


def _limit_malloc() -> None:
    """Reuse read buffers without page faults, and keep freed memory from piling up.

    Read buffers (8-16 MiB each) are allocated and freed at a high rate. Served by
    mmap, each one costs a page fault per 4 KiB and the kernel zeroing it - about 0.3 s
    of CPU per GiB read, 10 % of the throughput here. So buffers up to 32 MiB come from
    the heap and are reused (``M_MMAP_THRESHOLD``); free memory at the top of the heap
    beyond 64 MiB goes back to the OS (``M_TRIM_THRESHOLD``: what stays is bounded by
    the read budget, which bounds the buffers alive at once); two arenas keep threads
    from each holding their own (``M_ARENA_MAX``). ``FUSION_DEFAULT_MALLOC=1`` leaves
    glibc's defaults.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    if os.environ.get("FUSION_DEFAULT_MALLOC"):
        return
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024 * 1024)
    libc.mallopt(m_arena_max, 2)


def _cmd_mount(args: argparse.Namespace) -> int:
    from fusion.fs import FsConfig

    _limit_malloc()
    from fusion.fuse_ops import serve

    cfg = FsConfig(
        cache_dir=args.cache_dir,
        cache_bytes=args.cache_size,
        read_only=args.read_only,
        metadata_ttl=args.metadata_ttl,
        part_size=args.part_size,
        read_part_size=args.read_part_size,
        max_window=args.max_window,
        random_span=args.random_span,
        buckets=tuple(args.bucket),
        fetch_threads=args.fetch_threads,
        upload_threads=args.upload_threads,
    )
    serve(
        args.mountpoint,
        _store_config(args),
        cfg,
        allow_other=args.allow_other,
        debug=args.debug,
        ready_file=args.ready_file,
        stats_file=args.stats_file,
    )
    return 0


def _cmd_stage(args: argparse.Namespace) -> int:
    from fusion.stage import stage_in, stage_out
    from fusion.store import S3ObjectStore

    store = S3ObjectStore(_store_config(args))
    if args.direction == "in":
        items_in: list[str | tuple[str, str | os.PathLike[str] | None]] = []
        for item in args.items:
            url, eq, path = item.partition("=")
            items_in.append((url, path) if eq else url)
        done = stage_in(store, items_in, root=args.root)
    else:
        items_out: list[str | tuple[str | os.PathLike[str], str | None]] = []
        for item in args.items:
            path, eq, url = item.partition("=")
            items_out.append((path, url) if eq else path)
        done = stage_out(store, items_out, root=args.root)
    for f in done:
        print(f"{f.url}\t{f.path}\t{f.size}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG
        if getattr(args, "debug", False) or os.environ.get("FUSION_DEBUG")
        else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "mount":
            return _cmd_mount(args)
        return _cmd_stage(args)
    except (FusionError, OSError) as err:
        print(f"fusion: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
