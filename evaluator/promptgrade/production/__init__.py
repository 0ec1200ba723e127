"""Production at scale, seen from the lab: push a backlog through the deployed function's queue
(``backfill``), and measure production's accuracy against labels that arrive later (``monitor``).

Both read what the SQS-fed function writes (``promptgrade.stored_results``) with boto3; neither calls
a model. ``s3`` holds what they share: S3 locations, listings, and the clients.
"""
