"""The wall, the widget and the console: pages, scripts and styles the fan-out server serves.

Shipped inside the wheel as the package ``mixer.web`` (pyproject.toml maps it to this folder) and found at
run time with ``importlib.resources``; only the asset types ``mixer.fanout.pages`` allows are served.
"""
