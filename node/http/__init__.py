"""HTTP: the lab's web pages and the trustless-gateway subset."""
