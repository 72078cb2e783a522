"""Makes the engine fail on the third round, to check that a crash keeps the rounds done."""

import vllm

_original_chat = vllm.LLM.chat
_calls = []


def chat(self, messages, *args, **kwargs):
    _calls.append(1)
    if len(_calls) == 3:
        raise RuntimeError("planted engine failure")
    return _original_chat(self, messages, *args, **kwargs)


vllm.LLM.chat = chat
