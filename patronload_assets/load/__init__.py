"""The load: its assets, jobs, schedule, retries and timing."""
