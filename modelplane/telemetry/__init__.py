"""Logs (``logging``), Prometheus metrics (``metrics``), OpenTelemetry traces
(``tracing``), the dashboard's live statistics (``stats``), and what one request
records in each of them (``requests``)."""
