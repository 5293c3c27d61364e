import os
import textwrap

import pytest
import sglang_cpu

# triton.language defines its standard functions when first imported, interpreted or compiled by this variable:
# set it before collection imports SGLang (which imports triton), or the kernel tests cannot run on the CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

# Before anything imports transformers or SGLang: both probe the CUDA-only packages the stubs stand in for.
sglang_cpu.install_import_stubs()


@pytest.fixture
def write_map(tmp_path):
    """Write a YAML map (dedented) and return its path."""

    def write(text: str, name: str = "map.yaml"):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write
