"""Job machinery over DataJoint's job tables: queues and their per-table hooks (``queues``), worker
isolation and the worker functions (``isolation``), the heartbeat (``heartbeat``), reservations
(``reservations``), the one job loop with its two policies, worker and ``populate`` (``runner``), and
job administration (``admin``).

Imports ``schemas`` (and ``pipeline``), never ``usecases`` or ``cli``.
"""

# first: DataJoint is then imported without its start-up noise, after the environment was checked
import schemas  # noqa: E402, F401
