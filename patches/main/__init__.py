"""Patches applied in the server's main process: its arguments (the map is resolved and checked there, before
any worker starts) and its HTTP routes (``GET /indexcache``, ``POST /indexcache/map``, their admin key check).
Importing this package applies nothing."""
