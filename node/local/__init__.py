"""Local use cases: adding, publishing, verifying, exporting and importing, with no network."""
