"""Reaching the target: the SSH connection (host key verified) and the Slurm commands."""

from __future__ import annotations

from pathlib import Path

from bridge.config import ConfigError
from bridge.doctor.context import DoctorContext
from bridge.doctor.core import Check, CheckFailed, CheckSkipped
from schedulers.errors import BackendUnavailable, CommandFailed, HostKeyMismatch

SSH = "ssh reachable, host key known"
SLURM = "slurm commands answer (sinfo, squeue)"
PARTITION = "partition and account exist"


async def ssh_reachable(ctx: DoctorContext) -> str:
    t = ctx.target
    if t.setting("runner") != "ssh":
        raise CheckSkipped("commands run on this machine (runner = local)")
    if t.setting("key_file") and not Path(t.setting("key_file")).expanduser().is_file():
        raise CheckFailed(
            f"key_file {t.setting('key_file')} does not exist",
            f"point key_file of target {t.name} at the private key the login node accepts",
        )
    try:
        runner = ctx.runner()
        result = await runner.run(["uname", "-n"], timeout=30)
    except ConfigError as err:
        raise CheckFailed(
            str(err), f"complete the [[targets]] entry {t.name} in bridge.toml"
        ) from err
    except HostKeyMismatch as err:
        raise CheckFailed(
            f"host key refused: {err}",
            f"confirm the host key fingerprint of {t.setting('host')}:{t.setting('port')} with the centre, then "
            f"add it: ssh-keyscan -p {t.setting('port')} {t.setting('host')} >> {t.setting('known_hosts')} (and remove a stale "
            "entry with ssh-keygen -R)",
        ) from err
    except BackendUnavailable as err:
        raise CheckFailed(
            str(err),
            f"check host, port, user and key_file of target {t.name}; try: "
            f"ssh -p {t.setting('port')} -i {t.setting('key_file') or '~/.ssh/id_ed25519'} "
            f"{(t.setting('user') + '@') if t.setting('user') else ''}{t.setting('host')} true",
        ) from err
    return f"{t.setting('user') + '@' if t.setting('user') else ''}{t.setting('host')}:{t.setting('port')} is {result.stdout.strip()}"


async def slurm_answers(ctx: DoctorContext) -> str:
    runner = ctx.runner()
    answers = []
    for argv in (["sinfo", "-h", "-o", "%P %a %D"], ["squeue", "-h", "-o", "%i"]):
        try:
            result = await runner.run(argv, timeout=30, check=False)
        except FileNotFoundError as err:
            raise CheckFailed(
                f"{argv[0]} is not installed where the broker runs commands",
                "install the Slurm client commands on the login node, or set runner = 'ssh'",
            ) from err
        if result.returncode != 0:
            raise CheckFailed(f"{argv[0]}: {(result.stderr or result.stdout).strip()[:300]}")
        answers.append(result.stdout)
    ctx.cache["partitions"] = [
        line.split()[0].rstrip("*") for line in answers[0].splitlines() if line.strip()
    ]
    queued = len([line for line in answers[1].splitlines() if line.strip()])
    return f"partitions {', '.join(ctx.cache['partitions']) or '(none)'}; {queued} jobs queued"


async def partition_and_account(ctx: DoctorContext) -> str:
    t = ctx.target
    partitions: list[str] = ctx.cache.get("partitions", [])
    notes = []
    if t.setting("partition"):
        if t.setting("partition") not in partitions:
            raise CheckFailed(
                f"partition {t.setting('partition')!r} is not among {', '.join(partitions) or '(none)'}",
                f"set partition of target {t.name} to one of: {', '.join(partitions)}",
            )
        notes.append(f"partition {t.setting('partition')}")
    else:
        notes.append("cluster default partition")
    if t.setting("account"):
        runner = ctx.runner()
        argv = ["sacctmgr", "-n", "-P", "show", "account", t.setting("account"), "format=account"]
        try:
            result = await runner.run(argv, timeout=30, check=False)
        except (FileNotFoundError, CommandFailed) as err:
            raise CheckFailed(f"sacctmgr cannot run: {err}") from err
        if result.returncode != 0:
            # without slurmdbd there is no account list; sbatch accepts any account then
            notes.append(
                f"account {t.setting('account')} not checked ({result.stderr.strip()[:120]})"
            )
        elif t.setting("account") not in result.stdout.split():
            raise CheckFailed(
                f"account {t.setting('account')!r} is unknown to sacctmgr",
                f"use an account listed by `sacctmgr show associations user=$USER` for {t.name}",
            )
        else:
            notes.append(f"account {t.setting('account')}")
    return "; ".join(notes)


CHECKS = [
    Check(SSH, ssh_reachable, "check the ssh settings of target {target}", timeout_s=40),
    Check(
        SLURM,
        slurm_answers,
        "slurmctld does not answer: run `scontrol ping` on {host}, start slurmctld, and set "
        "SLURM_CONF in env of target {target} if Slurm's config is not at the default path",
        requires=(SSH,),
    ),
    Check(
        PARTITION,
        partition_and_account,
        "set partition/account of target {target} to ones `sinfo`/`sacctmgr` list",
        requires=(SLURM,),
    ),
]
