"""Governance of the request path: rate limits, budgets, usage records and cost, behind
one :class:`~modelplane.governance.governor.Governor` that the gateway admits each
request through and settles it with (``governor.py``). The control plane's services
for the same rules (``control/limits.py``, ``control/budgets.py``, ``control/usage.py``)
set and report them; the rows live in ``store/governance.py``."""
