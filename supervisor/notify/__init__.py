"""Telling people about failures: events the supervisor emits, the policy that keeps them from storming, the
sinks that deliver them (a command, a webhook), and the notifier helper process that runs the sinks."""
