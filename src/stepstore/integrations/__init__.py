"""Framework integrations, one module per framework.

Nothing here is imported by ``import stepstore``; each module imports its framework, so it
is loaded only when used (``stepstore.torch`` loads :mod:`stepstore.integrations.torch`).
"""
