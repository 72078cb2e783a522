"""Planted API-server leak for `tracer diff --serve` (raw multimodal inputs kept after use): the bytes of every
request's image, decoded from its base64 data URL in the API server, are kept in a module list.

vLLM's `ImageMediaIO.load_bytes` (vllm/multimodal/media/image.py) gets the decoded bytes from `load_base64`; the
wrapper keeps a reference to them. The allocation stack is vLLM's data-URL decoding in the API server; the holder
is `serve_image_bytes._kept[<n>]`.
"""

from vllm.multimodal.media import image

_kept = []  # every image's decoded bytes (the leak: never cleared)
_original_load_bytes = image.ImageMediaIO.load_bytes


def load_bytes_keeping_data(self, data):
    _kept.append(data)
    return _original_load_bytes(self, data)


image.ImageMediaIO.load_bytes = load_bytes_keeping_data
