"""promptgrade: prompt-engineering experiments for multimodal LLMs that classify and grade images.

This package's top level imports nothing heavy on purpose: the Lambda grading function imports the
grading path (``task``, ``prompts``, ``answers``, ``grading``, ``providers``) from here without mlflow,
pandas or datasets in its zip.
"""

__version__ = "0.1.0"
