"""Controller-side tooling (local API, demo, traffic generator, builds).

Never shipped in a Lambda zip.
"""
