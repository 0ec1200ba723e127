"""``promptgrade optimize``: reflective prompt search whose output is plain, versioned templates.

``search`` is the loop (it calls the runner, never a provider directly), ``proposals`` checks what
the reflection model writes, ``reflection`` builds what it is shown, ``command`` is the CLI verb.
"""
