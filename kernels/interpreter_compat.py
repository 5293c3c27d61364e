"""Let loops with runtime bounds run under ``TRITON_INTERPRET=1`` with numpy >= 2.4.

The interpreter of triton 3.5 keeps every scalar as a one-element array and turns it into a Python int with
``int(array)``, which numpy 2.4 refuses for arrays of one dimension, so ``range(0, n, step)`` over a kernel
argument fails. This takes the element explicitly; compiled kernels are untouched.
"""

from __future__ import annotations

import os


def patch_scalar_index() -> None:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    from triton.runtime import interpreter

    original = interpreter._patch_lang_tensor
    if getattr(original, "_indexcache_scalar_index", False):
        return

    def patch_lang_tensor(tensor):
        original(tensor)
        tensor.__index__ = lambda self: int(self.handle.data.reshape(-1)[0])

    patch_lang_tensor._indexcache_scalar_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor
