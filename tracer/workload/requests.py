"""Seeded chat requests: one random image and random text each, the same shapes every round."""

from __future__ import annotations

import random

from .config import WorkloadConfig

_WORDS = (
    "describe the picture what colour shape texture light shadow count objects where left right top bottom "
    "center corner noise pattern random pixel scene detail summarize compare explain list tell briefly"
).split()


def single_token_words(tokenizer, limit: int = 512) -> list[str]:
    """Words that the tokenizer encodes (with a leading space) as exactly one token.

    Random text made of them has the same token count every round, so prompts keep their shapes and CPU
    kernel caches (oneDNN, brgemm) that key on shapes stop growing after warmup; content stays fresh.
    """
    candidates = sorted(t[1:] for t in tokenizer.get_vocab() if t.startswith("\u0120") and t[1:].isalpha()
                        and t[1:].islower() and len(t) >= 4)[:limit * 2]
    words = [w for w in candidates if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1][:limit]
    return words if len(words) >= 32 else list(_WORDS)


def make_requests(config: WorkloadConfig, round_index: int, words: list[str] | None = None) -> list[list[dict]]:
    """A batch of chat conversations, each one random image plus random text. Fixed mode repeats round 0's."""
    from PIL import Image
    import numpy as np

    key = 0 if config.images == "fixed" else round_index
    rng = random.Random(config.seed * 1_000_003 + key)
    words = words or list(_WORDS)
    conversations = []
    for _ in range(config.batch):
        w, h = config.image_shape(rng)
        pixels = np.random.default_rng(rng.getrandbits(32)).integers(0, 256, (h, w, 3), dtype=np.uint8)
        text = "".join(" " + rng.choice(words) for _ in range(config.words))
        conversations.append([{
            "role": "user",
            "content": [{"type": "image_pil", "image_pil": Image.fromarray(pixels, "RGB")},
                        {"type": "text", "text": text}],
        }])
    return conversations
