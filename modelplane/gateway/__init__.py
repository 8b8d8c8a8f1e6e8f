"""The request path: pick a replica for a model and forward the request to it."""
