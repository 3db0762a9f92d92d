"""Controller-side tooling (local API adapter, demo, traffic generator, builds): never shipped in a Lambda zip."""
