"""Celery beat schedules, in one module, with crontab expressions from the environment."""
