"""What users do, as functions: ingest, experiments, sweeps, checkpoint import, submissions, queries and
report data, notebook helpers and database set-up (roles, logins).

Besides the tables' own ``make``, these are the only writers. They take typed arguments (settings
included, never read from a global), return results and raise errors with one-line messages; they
print nothing (the command line, ``cli``, and notebooks show the results). Imports ``jobs``,
``schemas`` and ``pipeline``, never ``cli``.
"""

# first: DataJoint is then imported without its start-up noise, after the environment was checked
import schemas  # noqa: E402, F401
