"""Compute backends behind one small interface (see :mod:`schedulers.base`).

Each backend module is small: it turns a :class:`~schedulers.base.JobSpec` (one
command plus resources) into a native job, reads native states back through a
literal table, and cancels.  Backends never learn about staging, containers or the
task model: the node agent does that.  Nothing here imports ``bridge``.
"""
