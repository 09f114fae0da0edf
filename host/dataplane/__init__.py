"""The native data plane: HAProxy, run and configured by the host agent (docs/host.md "Data path").

config.py: desired state -> HAProxy configuration text (pure); process.py: run, check, reload and
supervise the HAProxy master process, and its runtime API; stats.py: per-server counters and the
request log, folded into the host's per-digest traffic figures; plane.py: the agent's side (what the
supervisor runs -> a configuration, server states, idle gating, events).
"""
