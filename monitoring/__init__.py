"""Monitoring: the registry, timing, costs, alerts, sinks, sampler and exposure."""
