"""Serving: model repository, graph definitions and the protocol-neutral data plane."""
