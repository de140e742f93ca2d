"""Load a stand-alone script (e.g. a mini suite's make.py) as a module of its own name, so two
scripts that share a file name never meet in sys.modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_script(path: Path):
    name = "script_" + "_".join(Path(path).with_suffix("").parts[-2:]).replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
