"""``modelplane`` with the echo test engine registered (``python -m tests.runtimes.serve
serve …``): a real server process whose endpoints may use ``engine: echo``."""

from tests.runtimes import echo_spec

echo_spec.register()

from modelplane.cli.main import main  # noqa: E402  (after the engine is registered)

main()
