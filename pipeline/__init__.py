"""sensorium-pipeline compute layer.

Everything under ``pipeline`` is free of database code: it never imports ``datajoint`` (the CLI does,
lazily, inside database commands). The DataJoint tables live in the sibling package ``schemas``.
"""

__version__ = "0.1.0"
