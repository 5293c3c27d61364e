"""Layer maps shipped as package data: ``<family>/<name>.yaml`` and bundled model configs under ``models/``."""
