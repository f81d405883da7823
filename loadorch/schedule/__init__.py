"""Scheduled resilience runs: cron expressions, systemd/cron installs, the scheduled runner.

- `cron`: parse cron expressions, next due time, systemd OnCalendar (pure);
- `install`: store, install, list, remove and export schedules;
- `runner`: run a schedule now (lock, missed runs, JUnit, verdict, webhook);
- `results`: JUnit XML and the verdict record (pure).
"""
