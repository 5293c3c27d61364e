"""Installs ``sglang_indexcache.pth`` next to the package, so every Python process (SGLang's spawned workers
included) can arm IndexCache at start-up. Everything else is in pyproject.toml."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "sglang_indexcache.pth"


class build_py_with_pth(build_py):
    def run(self):
        super().run()
        self.copy_file(str(Path(__file__).parent / PTH), str(Path(self.build_lib) / PTH), preserve_mode=0)


setup(cmdclass={"build_py": build_py_with_pth})
