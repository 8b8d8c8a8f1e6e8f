"""HTTP: thin routers over the services, one app factory, one error mapping."""
