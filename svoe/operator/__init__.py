"""The svoe operator: kopf handlers (thin) around pure render, sharding and planning functions."""
