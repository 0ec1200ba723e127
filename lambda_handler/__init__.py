"""The deployed grading function: API Gateway, S3, SQS and direct events in, the one grading path, JSON out.

It runs ``promptgrade``'s grading path unchanged (render → call → parse), so a figure measured in the
lab describes what this function answers. ``app.handler`` is the Lambda entry point; ``events`` turns
an event into image requests; ``outcomes`` shapes the answers; ``errors`` and ``logs`` hold the typed
errors and the JSON-lines logging; ``secrets`` reads the model's API key from AWS; ``fetch`` downloads
``url`` and ``s3_uri`` inputs without letting a caller aim the function at internal addresses; ``sqs``
grades a queue's batch, storing each result once (``store``).
"""
