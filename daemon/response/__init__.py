"""What is done about an incident beyond notifying: investigation, remediation, postmortem."""
