"""The worker heartbeat table: one row per run of a worker process (``sensorium worker`` or
``populate --reserve-jobs``).

Only the table lives here. Its rows are written through the worker functions of :mod:`jobs.isolation`
(``SECURITY DEFINER``, checked against each process's token); the heartbeat itself is
:class:`jobs.heartbeat.Heartbeat`, and which tables a worker serves is :mod:`jobs.queues`.
"""

from __future__ import annotations

import datajoint as dj

schema = dj.Schema()


@schema
class Worker(dj.Manual):
    definition = """
    # one run of a worker process (`sensorium worker` or `populate --reserve-jobs`) and its heartbeat
    worker_id           : char(32)        # random id of this run
    ---
    host                : varchar(255)    # host name, as DataJoint records it in job reservations
    pid                 : int32           # process id, as DataJoint records it in job reservations
    queue               : varchar(16)     # gpu, cpu or all
    device              : varchar(64)     # torch device it trains on
    started_at          : datetime(3)     # database server time
    last_seen           : datetime(3)     # database server time of the latest heartbeat
    status              : varchar(16)     # running, stopped (exited cleanly) or dead (declared by another)
    current_table=""    : varchar(64)     # table of the job in hand ('' when idle)
    current_key=null    : json            # key of the job in hand
    jobs_done=0         : int32           # jobs finished by this run
    jobs_failed=0       : int32           # jobs that ended in an error
    stopped_at=null     : datetime(3)     # when it stopped or was declared dead
    """
