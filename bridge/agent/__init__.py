"""The node agent: runs one TES task attempt from its work directory.

``bridge-agent run <work-url>`` (:mod:`.main`) reads ``task.json`` and writes
``attempts/<N>/status.json`` (:mod:`.workdir`, shared with the broker).  One module per
job: :mod:`.task` (the parts of the task the agent uses), :mod:`.paths` (container
paths on the host), :mod:`.staging` (inputs in, outputs out, behind a ``Stager``
Protocol), :mod:`.runtime` (none/docker/podman/charliecloud/sandbox command lines),
:mod:`.sandbox` (bubblewrap command lines), :mod:`.check` (what this node can run),
:mod:`.executor` (one process), :mod:`.cancel` (SIGTERM → ``CANCELED``),
:mod:`.status` (the status document and progress posts), :mod:`.attempt` (the steps
in order), :mod:`.redact` (no credentials in logs).

The agent runs on compute nodes: it imports no database, web framework or broker
module (an import-linter contract checks this); boto3 and httpx load only when used.
"""
