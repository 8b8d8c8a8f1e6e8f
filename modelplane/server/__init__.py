"""The server: the composition root (``platform``, ``app``) and the HTTP transport
(``protocol``, ``fastpath``, ``middleware``) around the routers of ``api/``."""
