"""Growing the ground truth: Label Studio export and import, ordered by where a finished sweep's
candidates disagree, and the labels the candidates unanimously contradict (``suspects``).

Lab code: it reads finished runs through ``tracking.read`` and never calls a model.
"""
