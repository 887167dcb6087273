"""Ingest: platform payloads and recordings in, normalised events in each chat's Redis stream out.

``sources/`` has one module per platform (its parser and its live follower), ``recorded`` reads
recorded files of any format, ``replay`` paces them, ``webhook`` takes posted records, and
``publish`` writes all of it to the chat streams with the followers' cursors. Imports only the core.
"""
