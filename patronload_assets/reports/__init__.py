"""What the load tells people: run report emails, the sensors that send them, the overdue
report, and the summary make run prints."""
