"""``sensorium report``: figures (matplotlib) and one self-contained HTML page from plain data.

``data`` holds what a report shows (filled from the database by ``usecases.report``); ``figures``
draws it; ``html`` assembles the page with every figure embedded. No DataJoint here.
"""
