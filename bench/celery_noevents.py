"""Experiment only (not the product): the Procfile worker with Celery task events switched off.

`BENCH_WORKER_APP=bench.celery_noevents` makes the benches run this instead of `celery_app`,
to measure proposal P2 of BENCHMARKS.md without editing tasks/app.py.
"""

from celery_app import app

app.conf.worker_send_task_events = False
app.conf.task_send_sent_event = False

__all__ = ["app"]
