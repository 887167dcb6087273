"""Ingest: platform payloads and recordings in, normalised events in each chat's Redis stream out.

``sources/`` has each platform's parser and live follower, ``follow`` starts and runs the followers the
settings name, ``recorded`` reads recorded files of any format (``recorded_shapes`` splits a file into its
records), ``replay`` paces them, ``webhook`` takes posted records, and ``publish`` writes all of it to the chat
streams with the followers' cursors.
Imports only the core.
"""
