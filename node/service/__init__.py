"""The node service: pure state machines (events in, effects out; time is an argument)."""
