"""What more than one test file needs, in one place: local servers, experiment files, the sweep as the
CLI runs it, scripted answers.

Imported as ``helpers.<module>`` from any test folder: ``tests/`` is on ``sys.path`` (pytest's
``pythonpath`` setting), so every xdist worker finds them the same way, whichever files it runs.
Test folders hold only ``test_*.py`` and ``conftest.py``: a helper beside its tests would be found
only once pytest had imported a test from that folder, and two helpers of one name would collide.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository: experiments/, prompts/, data/sample
