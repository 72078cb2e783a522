"""Environment fix for test machines, not product code: put this directory on PYTHONPATH.

PyPI's torchvision is a CUDA build; next to the CPU torch its compiled ops cannot load, and importing it fails
with "operator torchvision::nms does not exist" because its fake-kernel registrations refer to schemas that
were never defined. transformers' Qwen3-VL video processor needs torchvision importable, so define the two
schemas here, before anything imports torchvision. Their kernels stay missing; Qwen3-VL never calls them.

With a torchvision built for the installed torch, its compiled library registers the schemas itself, and
defining them here as well would abort with "Tried to register an operator ... multiple times": then this
does nothing.
"""

import importlib.machinery
import importlib.util
import os

_torchvision_lib = None  # kept referenced: the schemas are dropped when the Library object is collected


def _compiled_ops_load(torch, torchvision_dirs) -> bool:
    """Whether torchvision's compiled library loads next to this torch (it then registers its own schemas)."""
    for folder in torchvision_dirs:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, "_C" + suffix)
            if os.path.exists(path):
                try:
                    torch.ops.load_library(path)
                except OSError:
                    return False
                return True
    return False


_torchvision = importlib.util.find_spec("torchvision")
if _torchvision is not None and importlib.util.find_spec("torch") is not None:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
    except RuntimeError:
        if not _compiled_ops_load(torch, _torchvision.submodule_search_locations or ()):
            _torchvision_lib = torch.library.Library("torchvision", "DEF")
            _torchvision_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
            _torchvision_lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
