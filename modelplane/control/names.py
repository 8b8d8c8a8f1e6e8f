"""The one rule for names people choose (endpoints, routes, teams)."""

import re

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
