"""Environment fix for test machines, not product code: put this directory on PYTHONPATH.

PyPI's torchvision is a CUDA build; next to the CPU torch its compiled ops cannot load, and importing it fails
with "operator torchvision::nms does not exist" because its fake-kernel registrations refer to schemas that
were never defined. transformers' Qwen3-VL video processor needs torchvision importable, so define the two
schemas here, before anything imports torchvision. Their kernels stay missing; Qwen3-VL never calls them.
"""

import importlib.util

_torchvision_lib = None  # kept referenced: the schemas are dropped when the Library object is collected

if importlib.util.find_spec("torch") is not None:
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
    except RuntimeError:
        _torchvision_lib = torch.library.Library("torchvision", "DEF")
        _torchvision_lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _torchvision_lib.define("qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor")
