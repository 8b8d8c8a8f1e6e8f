"""The web dashboard: plain HTML, CSS and JavaScript in ``static/``, served by the server
at ``/ui`` with no build step and nothing fetched from elsewhere at run time. It talks
to ``/api`` and ``/v1`` with the API key the user signs in with."""

from pathlib import Path

STATIC = Path(__file__).parent / "static"
