"""Planted host leak (raw multimodal inputs kept after encoding): every request's image bytes go to a module list."""

import vllm

_stash = []
_original_chat = vllm.LLM.chat


def remember_images(conversations):
    for conversation in conversations:
        for message in conversation:
            for part in message["content"]:
                if part.get("type") == "image_pil":
                    _stash.append(part["image_pil"].tobytes())


def chat(self, messages, *args, **kwargs):
    remember_images(messages)
    return _original_chat(self, messages, *args, **kwargs)


vllm.LLM.chat = chat
