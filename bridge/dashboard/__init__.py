"""The server-rendered dashboard: overview, tasks, workflows, builds, storage, cost.

Pages are Jinja2 templates filled from :mod:`bridge.store_reads` (run in worker
threads); charts are SVG drawn on the server (:mod:`bridge.dashboard.charts`); the
only script is ``static/dash.js``, which refreshes the live part of a page.
"""
