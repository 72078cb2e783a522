"""Handmade report pieces shared by the unit tests of the gate and the baseline."""

USER_STACK = [  # innermost first: a planted owner in user code and its callers
    {"function": "remember_images", "file": "/repo/tests/plants/host_image_bytes.py", "line": 14},
    {"function": "chat", "file": "/repo/tests/plants/host_image_bytes.py", "line": 18},
    {"function": "serve", "file": "/repo/app/serve.py", "line": 7},
    {"function": "main", "file": "/repo/app/main.py", "line": 3},
]
