"""The C++ runtime: rendered from ``templates/`` for a backend and a target (``spec``, ``render``),
built natively, cross-compiled or in a container (``build``). Backends use it; it uses no backend.
"""
