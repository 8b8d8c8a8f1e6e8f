"""Control-plane services: keys, endpoints, and the reconciler that runs them."""
