"""LAVA targets: one LAVA job per cell (render.py), run by lava-run on this
machine (dispatcher.py) or a LAVA server (server.py), the outcome read back
from the job log (joblog.py, outcome.py).  targets.py holds the two Target
classes; instance.py brings up a local LAVA instance; docs/lava.md."""
