"""`mixer loadtest`: ``run`` (the command: workers, ramp, drive, verdict), ``client`` and ``poll``
(the worker processes' sampled and counting clients), ``count`` (frame counting), ``drive`` (the
driven posts), ``report`` (text and plot), ``procstat`` (CPU and memory from /proc).
"""
