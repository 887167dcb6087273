"""Load tests past one machine on an existing distributed engine: the Locust integration (``mixer.load.locust``).

Needs the optional ``load`` extra (``pip install 'chatmixer[load]'``); nothing else in mixer imports this package.
"""
