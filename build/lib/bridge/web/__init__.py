"""The web process: app factory, webhook routes, health and metrics, the gunicorn set-up."""
