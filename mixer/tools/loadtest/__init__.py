"""`mixer loadtest` and `mixer rehearse`: ``run`` (the load test: workers, ramp, drive, verdict; the guard and the
connection cap), ``client`` and ``poll`` (the worker processes' sampled and counting clients), ``sse`` (the /events
clients), ``count`` (frame counting), ``drive`` (driven posts at a fixed rate), ``replaydrive`` (a recording at N x,
and the feed watched), ``rehearse`` (the rehearsal command and its thresholds), ``report`` (text and plot),
``procstat`` (CPU and memory from /proc).
"""
