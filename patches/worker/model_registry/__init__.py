"""Imported by SGLang's model registry in every scheduler process (``SGLANG_EXTERNAL_MODEL_PACKAGE``).

A second route into the workers besides the ``.pth`` start-up hook: the registry imports this package after
all of SGLang's own model modules and before any model is built, and an import error here stops the worker.
It is a package of its own, holding nothing else, because the registry imports every module of it.
"""

from ... import apply_model_patches

apply_model_patches()
