"""``promptgrade optimize``: reflective prompt search whose output is plain, versioned templates.

``search`` is the loop (it calls the runner, never a provider directly); ``pool`` holds the templates
tried and the choices made from their per-example scores; ``proposals`` checks what the reflection
model writes; ``reflection`` builds what it is shown; ``reference_changes`` proposes other training
trays as references (``--references``); ``versions`` writes the files (freezing their references); the
CLI verb is ``cli/optimize.py``.
"""
